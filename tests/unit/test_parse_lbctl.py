"""lbctl's own config format: the error corpus, the full valid document, defaults and warnings."""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbctl.core.model import (
    AddressRange,
    AllocationScope,
    BGPAdvertisement,
    BGPPeer,
    Community,
    CommunityKind,
    Config,
    ConfigError,
    ConfigFormat,
    L2Advertisement,
    LabelSelector,
    ParsedConfig,
    PeerName,
    Pool,
    PoolName,
    SecretRef,
    SelectorOperator,
    SelectorRequirement,
    Severity,
)
from lbctl.core.parse import parse_document
from lbctl.core.parse_lbctl import is_lbctl_document, parse_lbctl
from lbctl.core.parse_lbctl_rules import FREE_MAPS, SCHEMA, key_paths

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "corpus"
INVALID = yaml.safe_load((CORPUS / "lbctl_invalid.yaml").read_text())
API = {"apiVersion": "lbctl.io/v1alpha1"}


def errors_of(doc: object, where: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_lbctl(doc, where)
    assert all(i.severity is Severity.ERROR for i in info.value.issues)
    return [str(i) for i in info.value.issues]


def parsed(doc: dict[str, Any]) -> ParsedConfig:
    return parse_lbctl({**API, **doc})


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID, ids=[c["id"] for c in INVALID])
def test_invalid_corpus_case_reports_exactly_its_errors(case: dict[str, Any]) -> None:
    assert errors_of(case["doc"]) == case["errors"]


def test_corpus_is_large_and_ids_are_unique() -> None:
    ids = [c["id"] for c in INVALID]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 55
    assert all(set(c) == {"id", "doc", "errors"} and c["errors"] for c in INVALID)


def written_key_paths(node: object, path: str = "") -> Iterator[str]:
    """The schema paths of every key written in a document ('pools[].name', 'communities.*')."""
    if isinstance(node, dict):
        for key, value in node.items():
            if path in FREE_MAPS:
                yield f"{path}.*"
                continue
            child = f"{path}.{key}" if path else str(key)
            yield child
            yield from written_key_paths(value, child)
    elif isinstance(node, list):
        for item in node:
            yield from written_key_paths(item, f"{path}[]")


def test_corpus_uses_every_key_of_the_format() -> None:
    used = {p for case in INVALID for p in written_key_paths(case["doc"])}
    missing = sorted(set(key_paths()) - used)
    assert not missing, f"no corpus case writes these keys: {missing}"


def selector_agnostic(path: str) -> str:
    """Selectors look alike anywhere: 'x.nodeSelectors[].matchLabels.*' -> 'S.matchLabels.*'."""
    return re.sub(r"^.*Selectors\[\]", "S", path)


def test_valid_full_document_uses_every_key_of_the_format() -> None:
    """Every key, every selector key somewhere (not in all five selector places)."""
    doc = yaml.safe_load((CORPUS / "lbctl_valid_full.yaml").read_text())
    used = {selector_agnostic(p) for p in written_key_paths(doc)}
    assert used == {selector_agnostic(p) for p in key_paths()}


def documented_keys() -> set[str]:
    """Leaf key names in the key tables (| key | type | default | validation |) of the docs."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("## lbctl's format", 1)[1].split("## From MetalLB", 1)[0]
    leaves: set[str] = set()
    in_key_table = False
    for line in section.splitlines():
        if not line.startswith("|"):
            in_key_table = False
        elif line.startswith("| key | type | default | validation |"):
            in_key_table = True
        elif in_key_table and (cell := re.match(r"\| `([^`]+)` \|", line)):
            leaves.add(cell.group(1).rsplit(".", 1)[-1].removesuffix("[]"))
    return {leaf for leaf in leaves if not leaf.startswith("<")}


def test_docs_document_exactly_the_keys_the_parser_reads() -> None:
    schema_keys = {key for keys in SCHEMA.values() for key in keys}
    assert documented_keys() == schema_keys


# --- the full valid document and the example ----------------------------------------------------


def r(first: str, last: str, text: str) -> AddressRange:
    return AddressRange(ipaddress.ip_address(first), ipaddress.ip_address(last), text)


def req(key: str, op: SelectorOperator, *values: str) -> SelectorRequirement:
    return SelectorRequirement(key, op, values)


EXPECTED_FULL = Config(
    pools=(
        Pool(
            name=PoolName("public"),
            ranges=(
                r("192.0.2.0", "192.0.2.15", "192.0.2.0/28"),
                r("198.51.100.10", "198.51.100.20", "198.51.100.10 - 198.51.100.20"),
                r("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"),
            ),
            auto_assign=True,
            avoid_buggy_ips=True,
            scope=AllocationScope(
                priority=10,
                namespaces=("web", "shop"),
                namespace_selectors=(LabelSelector(match_labels=(("team", "web"),)),),
                service_selectors=(
                    LabelSelector(
                        match_expressions=(
                            req("exposure", SelectorOperator.IN, "public", "partner"),
                        )
                    ),
                ),
            ),
        ),
        Pool(
            name=PoolName("expensive"),
            ranges=(r("203.0.113.7", "203.0.113.7", "203.0.113.7"),),
            auto_assign=False,
        ),
        Pool(
            name=PoolName("private"),
            ranges=(
                r("203.0.113.64", "203.0.113.95", "203.0.113.64/27"),
                r("2001:db8:1::", "2001:db8:1::ff", "2001:db8:1::/120"),
            ),
        ),
    ),
    l2_advertisements=(
        L2Advertisement(
            name="lan",
            pools=(PoolName("public"), PoolName("expensive")),
            node_selectors=(
                LabelSelector(
                    match_labels=(("node-role.kubernetes.io/edge", ""),),
                    match_expressions=(
                        req("kubernetes.io/hostname", SelectorOperator.NOT_IN, "node-9"),
                    ),
                ),
            ),
            interfaces=("eth0", "bond0.100"),
        ),
    ),
    bgp_advertisements=(
        BGPAdvertisement(
            name="upstream",
            pools=(PoolName("private"),),
            aggregation_length=28,
            aggregation_length_v6=120,
            local_pref=100,
            communities=(
                Community(CommunityKind.STANDARD, (65535, 65281)),
                Community(CommunityKind.STANDARD, (65000, 100)),
                Community(CommunityKind.LARGE, (64512, 1, 2)),
                Community(CommunityKind.LARGE, (64512, 7, 8)),
            ),
            peers=(PeerName("router1"),),
            node_selectors=(
                LabelSelector(match_expressions=(req("rack", SelectorOperator.EXISTS),)),
            ),
        ),
    ),
    peers=(
        BGPPeer(
            name=PeerName("router1"),
            my_asn=64512,
            peer_asn=64512,
            address=ipaddress.IPv4Address("192.0.2.1"),
            port=1179,
            hold_time=9.0,
            keepalive_time=3.0,
            router_id=ipaddress.IPv4Address("192.0.2.10"),
            source_address=ipaddress.IPv4Address("192.0.2.10"),
            ebgp_multihop=False,
            node_selectors=(
                LabelSelector(
                    match_labels=(("rack", "a"),),
                    match_expressions=(req("spare", SelectorOperator.DOES_NOT_EXIST),),
                ),
            ),
            password_secret=SecretRef(namespace="lbctl-system", name="bgp-auth", key="router1"),
        ),
        BGPPeer(
            name=PeerName("router2"),
            my_asn=64512,
            peer_asn=65000,
            address=ipaddress.IPv6Address("2001:db8::1"),
            ebgp_multihop=True,
            password_secret=SecretRef(namespace="lbctl-system", name="bgp-auth", key="password"),
        ),
    ),
    allow_renumber=True,
    source_format=ConfigFormat.LBCTL,
)


def test_full_document_parses_to_the_expected_model_without_warnings() -> None:
    doc = yaml.safe_load((CORPUS / "lbctl_valid_full.yaml").read_text())
    result = parse_lbctl(doc)
    assert result.config == EXPECTED_FULL
    assert result.warnings == ()


def test_full_document_is_detected_as_lbctl_format() -> None:
    doc = yaml.safe_load((CORPUS / "lbctl_valid_full.yaml").read_text())
    assert is_lbctl_document(doc)
    assert parse_document(doc).config == EXPECTED_FULL


def test_example_configmap_is_valid_lbctl_config_without_warnings() -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "lbctl-config.yaml").read_text())
    assert (manifest["kind"], manifest["metadata"]["namespace"]) == ("ConfigMap", "lbctl-system")
    assert manifest["metadata"]["name"] == "lbctl-config"
    assert set(manifest["data"]) == {"config.yaml"}
    result = parse_document(yaml.safe_load(manifest["data"]["config.yaml"]))
    assert result.warnings == ()
    config = result.config
    assert [p.name for p in config.pools] == ["default", "public"]
    assert [p.password_secret for p in config.peers] == [
        SecretRef("lbctl-system", "bgp-auth", "password")
    ] * 2


# --- defaults and valid variants ----------------------------------------------------------------


def test_minimal_document_is_an_empty_config() -> None:
    assert parse_lbctl(dict(API)) == ParsedConfig(Config(source_format=ConfigFormat.LBCTL))


def test_null_lists_and_maps_mean_absent() -> None:
    doc = {key: None for key in SCHEMA[""] if key not in ("apiVersion", "kind")}
    assert parsed(doc).config == Config()


def test_pool_defaults() -> None:
    pool = parsed({"pools": [{"name": "p", "addresses": ["192.0.2.0/30"]}]}).config.pools[0]
    assert (pool.auto_assign, pool.avoid_buggy_ips, pool.scope) == (True, False, None)


def test_empty_service_allocation_means_unscoped() -> None:
    doc = {"pools": [{"name": "p", "addresses": ["192.0.2.0/30"], "serviceAllocation": {}}]}
    assert parsed(doc).config.pools[0].scope is None


PEER = {"name": "r1", "myASN": 64512, "peerASN": 64513, "address": "192.0.2.1"}


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        pytest.param({}, "port", 179, id="port-defaults-to-179"),
        pytest.param({}, "hold_time", 90.0, id="holdTime-defaults-to-90s"),
        pytest.param({}, "keepalive_time", None, id="keepaliveTime-defaults-to-hold-over-3"),
        pytest.param({"holdTime": "1m30s"}, "hold_time", 90.0, id="holdTime-go-duration"),
        pytest.param({"holdTime": "0s"}, "hold_time", 0.0, id="holdTime-zero-disables"),
        pytest.param({"holdTime": "3s"}, "hold_time", 3.0, id="holdTime-three-seconds-ok"),
        pytest.param({"holdTime": "65535s"}, "hold_time", 65535.0, id="holdTime-16-bit-maximum-ok"),
        pytest.param(
            {"holdTime": "30s", "keepaliveTime": "30s"},
            "keepalive_time",
            30.0,
            id="keepaliveTime-equal-to-holdTime-ok",
        ),
        pytest.param(
            {"holdTime": "0s", "keepaliveTime": "0s"},
            "keepalive_time",
            0.0,
            id="keepaliveTime-zero-with-holdTime-zero-ok",
        ),
        pytest.param({"myASN": 4294967295}, "my_asn", 4294967295, id="asn-32-bit-maximum-ok"),
        pytest.param(
            {"peerASN": 64512, "ebgpMultiHop": False},
            "ebgp_multihop",
            False,
            id="ebgpMultiHop-false-on-ibgp-ok",
        ),
        pytest.param(
            {"address": "2001:db8::1", "sourceAddress": "2001:db8::2", "routerID": "192.0.2.9"},
            "router_id",
            ipaddress.IPv4Address("192.0.2.9"),
            id="ipv6-session-with-ipv4-router-id",
        ),
        pytest.param(
            {"passwordSecret": {"name": "s"}},
            "password_secret",
            SecretRef("lbctl-system", "s", "password"),
            id="passwordSecret-defaults-namespace-and-key",
        ),
    ],
)
def test_peer_field_values(fields: dict[str, Any], attr: str, expected: object) -> None:
    peer = parsed({"bgpPeers": [{**PEER, **fields}]}).config.peers[0]
    assert getattr(peer, attr) == expected


@pytest.mark.parametrize(
    ("addresses", "adv", "expected"),
    [
        pytest.param(["192.0.2.0/24"], {}, (32, 128), id="aggregation-defaults-32-and-128"),
        pytest.param(
            ["192.0.2.0/24"], {"aggregationLength": 24}, (24, 128), id="aggregation-equal-ok"
        ),
        pytest.param(
            ["192.0.2.0-192.0.2.255"],
            {"aggregationLength": 24},
            (24, 128),
            id="aggregation-range-that-is-a-cidr-ok",
        ),
        pytest.param(
            ["2001:db8::/64"],
            {"aggregationLength": 0, "aggregationLengthV6": 64},
            (0, 64),
            id="aggregation-v4-unchecked-on-v6-pool",
        ),
    ],
)
def test_valid_aggregation_lengths(
    addresses: list[str], adv: dict[str, Any], expected: tuple[int, int]
) -> None:
    doc = {
        "pools": [{"name": "p", "addresses": addresses}],
        "bgpAdvertisements": [{"name": "a", **adv}],
    }
    got = parsed(doc).config.bgp_advertisements[0]
    assert (got.aggregation_length, got.aggregation_length_v6) == expected


# --- warnings, prefixes, secrets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "warnings"),
    [
        pytest.param(
            {"pools": [{"name": "p", "addresses": ["192.0.2.0/30"]}]},
            ['warning: pool "p": no l2Advertisement or bgpAdvertisement announces this pool'],
            id="pool-not-advertised",
        ),
        pytest.param(
            {
                "pools": [{"name": "p", "addresses": ["192.0.2.1/30"]}],
                "l2Advertisements": [{"name": "lan"}],
            },
            [
                'warning: pool "p": addresses[0]: "192.0.2.1/30": '
                "host bits set; this means 192.0.2.0/30"
            ],
            id="cidr-with-host-bits",
        ),
        pytest.param(
            {
                "bgpAdvertisements": [{"name": "a", "localPref": 50}],
                "bgpPeers": [PEER],
            },
            [
                'warning: bgpAdvertisement "a": localPref: '
                "only sent to iBGP peers, and every peer is eBGP"
            ],
            id="localPref-with-only-ebgp-peers",
        ),
        pytest.param(
            {
                "bgpAdvertisements": [{"name": "a", "localPref": 50}],
                "bgpPeers": [
                    PEER,
                    {**PEER, "name": "r2", "address": "192.0.2.2", "peerASN": 64512},
                ],
            },
            [],
            id="localPref-with-an-ibgp-peer-is-fine",
        ),
    ],
)
def test_warnings(doc: dict[str, Any], warnings: list[str]) -> None:
    assert [str(w) for w in parsed(doc).warnings] == warnings


def test_where_prefixes_every_message() -> None:
    doc = {**API, "kind": "X", "pools": [{"name": "p"}]}
    source = 'configmap lbctl-system/lbctl-config: data["config.yaml"]'
    assert errors_of(doc, source) == [
        f'{source}: kind: "X": must be "Config"',
        f'{source}: pool "p": addresses: is required',
    ]


def test_inline_password_is_never_echoed() -> None:
    doc = {**API, "bgpPeers": [{**PEER, "password": "hunter2-secret"}]}
    messages = errors_of(doc)
    assert messages == [
        'bgpPeer "r1": password: inline passwords are not allowed in lbctl\'s format; '
        "use passwordSecret"
    ]
    assert "hunter2" not in "".join(messages)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"apiVersion": "lbctl.io/v1alpha1"}, id="lbctl"),
        pytest.param({"apiVersion": "lbctl.io/v1"}, id="other-version"),
        pytest.param({"address-pools": []}, id="metallb"),
        pytest.param([{"apiVersion": "lbctl.io/v1alpha1"}], id="list"),
    ],
)
def test_format_detection_needs_exact_api_version(doc: object) -> None:
    assert is_lbctl_document(doc) == (doc == {"apiVersion": "lbctl.io/v1alpha1"})


# --- robustness ---------------------------------------------------------------------------------

FULL = yaml.safe_load((CORPUS / "lbctl_valid_full.yaml").read_text())

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["192.0.2.1", "2001:db8::/64", "1-2", "large:1:2:3", "90s", "In", "0"]),
)
yaml_trees = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def node_paths(node: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from node_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from node_paths(value, (*path, i))


ALL_PATHS = [p for p in node_paths(FULL) if p and p != ("apiVersion",)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(ALL_PATHS), yaml_trees)
def test_any_replaced_subtree_gives_a_config_or_config_errors(
    path: tuple[Any, ...], value: object
) -> None:
    doc = copy.deepcopy(FULL)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    try:  # any exception other than ConfigError fails the test
        parse_lbctl(doc)
    except ConfigError as err:
        assert err.issues
        assert all(i.severity is Severity.ERROR and i.message for i in err.issues)
