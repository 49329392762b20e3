"""MetalLB's legacy ConfigMap format: the malformed corpus, a full valid config, model mapping."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbctl.core import parse_metallb, parse_metallb_peers
from lbctl.core.lints import check_pools_against_hosts
from lbctl.core.model import (
    BFDProfile,
    BGPAdvertisement,
    Community,
    CommunityKind,
    Config,
    ConfigError,
    ConfigFormat,
    L2Advertisement,
    LabelSelector,
    ParsedConfig,
    PeerName,
    PoolName,
    SelectorOperator,
    SelectorRequirement,
    Severity,
)
from lbctl.core.parse import ParserCrash, parse_document
from lbctl.core.parse_common import KEBAB_KEYS

CORPUS = Path(__file__).parent.parent / "data" / "corpus"
INVALID = yaml.safe_load((CORPUS / "metallb_invalid.yaml").read_text())
ip = ipaddress.ip_address

# Every key of the legacy format, as the parser knows them.
ALL_KEYS = frozenset(
    parse_metallb.TOP_KEYS
    + parse_metallb.POOL_KEYS
    + parse_metallb.ADVERTISEMENT_KEYS
    + parse_metallb_peers.PEER_KEYS
    + parse_metallb_peers.BFD_KEYS
    + (KEBAB_KEYS.match_labels, KEBAB_KEYS.match_expressions, "key", "operator", "values")
)


def errors_of(doc: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_document(doc)
    assert not isinstance(err.value, ParserCrash), err.value.cause
    return [str(issue) for issue in err.value.issues]


def load(text: str) -> object:
    return yaml.safe_load(text)


def keys_in(tree: object) -> Iterator[object]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key
            yield from keys_in(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from keys_in(item)


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID, ids=[c["id"] for c in INVALID])
def test_malformed_config_reports_exactly_the_pinned_errors(case: dict[str, Any]) -> None:
    assert sorted(errors_of(case["doc"])) == sorted(case["errors"])


def test_corpus_covers_every_key_and_many_rules() -> None:
    ids = [c["id"] for c in INVALID]
    assert len(ids) == len(set(ids)) >= 55
    assert all(c["errors"] for c in INVALID)
    used = {key for c in INVALID for key in keys_in(c["doc"])}
    assert ALL_KEYS - used == set()


def test_full_valid_config_uses_every_key() -> None:
    used = set(keys_in(load((CORPUS / "metallb_valid_full.yaml").read_text())))
    assert ALL_KEYS - used == set()


def test_every_error_is_reported_at_once() -> None:
    doc = load(
        """
        address-pools:
        - {name: a, protocol: layer2, addresses: [10.0.0.9-10.0.0.3], colour: red}
        - {name: b, protocol: bgp, addresses: [192.0.2.0/24],
           bgp-advertisements: [{aggregation-length: 16}]}
        - {name: c, protocol: layer2, addresses: [192.0.2.128/25]}
        peers:
        - {peer-address: 192.0.2.1, peer-asn: 64500, my-asn: 0, hold-time: 1s}
        bfd-profiles: [{name: x, minimum-ttl: 0}]
        """
    )
    assert errors_of(doc) == [
        'bfd-profile "x": minimum-ttl: 0: must be in 1..254',
        'pool "a": colour: unknown field',
        'pool "a": addresses[0]: "10.0.0.9-10.0.0.3": start after end',
        'pool "b": bgp-advertisements[0].aggregation-length: 16: must be at least 24'
        ' (addresses[0] "192.0.2.0/24" has a /24)',
        'pool "c": addresses[0]: "192.0.2.128/25" overlaps pool "b": addresses[0] ("192.0.2.0/24")',
        'peer "192.0.2.1": my-asn: 0: must be in 1..4294967295',
        'peer "192.0.2.1": hold-time: "1s": must be 0 or at least 3s',
    ]


def test_source_prefix_names_the_configmap() -> None:
    with pytest.raises(ConfigError) as err:
        parse_document({"peers": 1}, where='configmap metallb-system/config: data["config"]')
    assert str(err.value) == (
        'configmap metallb-system/config: data["config"]: peers: must be a list, not an integer'
    )


# --- the valid config and its model -------------------------------------------------------------


@pytest.fixture(scope="module")
def full() -> ParsedConfig:
    return parse_document(load((CORPUS / "metallb_valid_full.yaml").read_text()))


def test_full_config_pools(full: ParsedConfig) -> None:
    config = full.config
    assert config.source_format is ConfigFormat.METALLB
    assert [p.name for p in config.pools] == ["public", "bgp-v4v6", "bgp-default"]
    public = config.pools[0]
    assert [(str(r.first), str(r.last)) for r in public.ranges] == [
        ("198.51.100.0", "198.51.100.63"),
        ("198.51.100.100", "198.51.100.110"),
    ]
    assert (public.auto_assign, public.avoid_buggy_ips, public.scope) == (True, True, None)
    assert (config.pools[1].auto_assign, config.pools[1].avoid_buggy_ips) == (False, False)
    assert config.pools[2].ranges[0].size == 1


def test_layer2_pool_gets_its_l2_advertisement(full: ParsedConfig) -> None:
    assert full.config.l2_advertisements == (
        L2Advertisement(name="public", pools=(PoolName("public"),)),
    )


def test_bgp_pools_get_written_or_default_advertisements(full: ParsedConfig) -> None:
    v4v6 = PoolName("bgp-v4v6")
    assert full.config.bgp_advertisements == (
        BGPAdvertisement(
            name="bgp-v4v6/bgp-advertisements[0]",
            pools=(v4v6,),
            aggregation_length=32,
            aggregation_length_v6=128,
            local_pref=100,
            communities=(
                Community(CommunityKind.STANDARD, (64500, 7)),
                Community(CommunityKind.STANDARD, (65535, 65282)),
            ),
        ),
        BGPAdvertisement(
            name="bgp-v4v6/bgp-advertisements[1]",
            pools=(v4v6,),
            aggregation_length=24,
            aggregation_length_v6=64,
        ),
        BGPAdvertisement(name="bgp-default", pools=(PoolName("bgp-default"),)),
    )


def test_peers_are_named_by_address_with_all_fields(full: ParsedConfig) -> None:
    first, second = full.config.peers
    assert first.name == PeerName("192.0.2.1")
    assert (first.my_asn, first.peer_asn, first.address, first.port) == (
        64500,
        64501,
        ip("192.0.2.1"),
        1179,
    )
    assert (first.hold_time, first.keepalive_time) == (90.0, 20.0)
    assert (first.router_id, first.source_address) == (ip("192.0.2.100"), ip("192.0.2.10"))
    assert first.ebgp_multihop is True
    assert first.bfd_profile == "fast"
    assert first.password is not None and first.password.reveal() == "t0p-s3cret"
    assert first.node_selectors == (
        LabelSelector(
            match_labels=(("rack", "r1"),),
            match_expressions=(
                SelectorRequirement(
                    "kubernetes.io/hostname", SelectorOperator.IN, ("node-a", "node-b")
                ),
            ),
        ),
        LabelSelector(match_expressions=(SelectorRequirement("edge", SelectorOperator.EXISTS),)),
    )
    assert second.name == PeerName("2001:db8::1")
    assert (second.port, second.hold_time, second.keepalive_time) == (179, 0.0, None)
    assert second.is_ibgp and second.password is None and second.node_selectors == ()


def test_bfd_profiles_kept_and_reported_unsupported(full: ParsedConfig) -> None:
    assert full.config.bfd_profiles == (
        BFDProfile("fast", 100, 150, 5, 60, echo_mode=True, passive_mode=True, minimum_ttl=10),
    )
    assert [(str(w), w.severity) for w in full.warnings] == [
        (
            "warning: bfd-profiles: bfd-profiles are not supported by lbctl (ExaBGP has no BFD);"
            " ignored",
            Severity.WARNING,
        )
    ]


def test_password_never_appears_in_repr_or_messages(full: ParsedConfig) -> None:
    assert "t0p-s3cret" not in repr(full)
    assert "t0p-s3cret" not in str(full.config.peers[0].password)
    bad = {
        "peers": [
            {"peer-address": "192.0.2.1", "peer-asn": 1, "my-asn": 1, "password": "ab\ncd"},
            {"peer-address": "192.0.2.2", "peer-asn": 1, "my-asn": 1, "password": "x" * 81},
            {"peer-address": "192.0.2.3", "peer-asn": 1, "my-asn": 0, "password": "kept-secret"},
            {"peer-address": "192.0.2.3", "peer-asn": 1, "my-asn": 1, "password": 31337},
        ]
    }
    text = "\n".join(errors_of(bad))
    assert all(s not in text for s in ("ab\ncd", "ab\\ncd", "x" * 81, "kept-secret", "31337"))


def test_empty_config_is_valid_and_empty() -> None:
    parsed = parse_document({})
    assert parsed.config == Config(source_format=ConfigFormat.METALLB)
    assert parsed.warnings == ()


def test_peers_differing_only_in_selectors_are_not_duplicates() -> None:
    peer = {"peer-address": "192.0.2.1", "peer-asn": 64501, "my-asn": 64500}
    doc = {"peers": [peer | {"node-selectors": [{"match-labels": {"rack": "a"}}]}, peer]}
    assert len(parse_document(doc).config.peers) == 2


@pytest.mark.parametrize(
    ("doc", "warning"),
    [
        (
            {"address-pools": [{"name": "a", "protocol": "bgp", "addresses": ["192.0.2.0/28"]}]},
            'warning: pool "a": protocol: "bgp" but no peers are configured: its addresses will'
            " not be announced",
        ),
        (
            {"address-pools": [{"name": "a", "protocol": "layer2", "addresses": ["192.0.2.9/28"]}]},
            'warning: pool "a": addresses[0]: "192.0.2.9/28": host bits set; this means'
            " 192.0.2.0/28",
        ),
    ],
    ids=["bgp-pool-without-peers", "cidr-host-bits-set"],
)
def test_valid_config_warnings(doc: object, warning: str) -> None:
    assert [str(w) for w in parse_document(doc).warnings] == [warning]


# --- format detection and crash containment -----------------------------------------------------


def test_document_without_lbctl_api_version_is_metallb() -> None:
    parsed = parse_document({"address-pools": []})
    assert parsed.config.source_format is ConfigFormat.METALLB


def test_parser_crash_becomes_a_distinct_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(doc: object, where: str = "") -> ParsedConfig:
        raise KeyError("t0p-s3cret")

    monkeypatch.setattr(parse_metallb, "parse_metallb", explode)
    with pytest.raises(ParserCrash) as err:
        parse_document({}, where="cm")
    assert str(err.value) == "cm: internal error in the metallb parser (KeyError); please report it"
    assert isinstance(err.value, ConfigError)
    assert isinstance(err.value.cause, KeyError)


# --- lints --------------------------------------------------------------------------------------


def test_pool_holding_a_node_ip_or_the_gateway_is_a_warning(full: ParsedConfig) -> None:
    issues = check_pools_against_hosts(
        full.config,
        node_ips=[ip("198.51.100.7"), ip("192.0.2.50"), ip("2001:db8:1::10")],
        gateways=[ip("198.51.100.1"), ip("198.51.100.1")],
    )
    assert [str(i) for i in issues] == [
        'warning: pool "public": addresses[0]: "198.51.100.0/26" contains 198.51.100.7,'
        " a node's InternalIP",
        'warning: pool "public": addresses[0]: "198.51.100.0/26" contains 198.51.100.1,'
        " the LAN gateway",
        'warning: pool "bgp-v4v6": addresses[1]: "2001:db8:1::/64" contains 2001:db8:1::10,'
        " a node's InternalIP",
    ]
    assert all(i.severity is Severity.WARNING for i in issues)


def test_no_lint_when_hosts_are_outside_every_pool(full: ParsedConfig) -> None:
    assert check_pools_against_hosts(full.config, [ip("192.0.2.5")], [ip("192.0.2.254")]) == ()
