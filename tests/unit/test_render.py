"""config_to_json: every model field rendered, passwords redacted, output stable (golden file)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from lbctl.core.model import (
    AddressRange,
    AllocationScope,
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    Community,
    CommunityKind,
    Config,
    ConfigFormat,
    L2Advertisement,
    LabelSelector,
    PeerName,
    Pool,
    PoolName,
    Secret,
    SecretRef,
    SelectorOperator,
    SelectorRequirement,
)
from lbctl.core.render import config_to_json

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
IP = ipaddress.ip_address


def check_golden(name: str, text: str) -> None:
    """Compare with tests/data/golden/NAME; LBCTL_UPDATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN / name
    if os.environ.get("LBCTL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with LBCTL_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def rng(text: str) -> AddressRange:
    if "/" in text:
        net = ipaddress.ip_network(text)
        return AddressRange(net[0], net[-1], text)
    first, last = (IP(part.strip()) for part in text.split("-"))
    return AddressRange(first, last, text)


SELECTOR = LabelSelector(
    match_labels=(("rack", "r1"),),
    match_expressions=(
        SelectorRequirement("zone", SelectorOperator.IN, ("a", "b")),
        SelectorRequirement("spare", SelectorOperator.DOES_NOT_EXIST),
    ),
)

CONFIG = Config(
    pools=(
        Pool(
            PoolName("public"),
            (rng("192.0.2.0/24"), rng("2001:db8::/64")),
            avoid_buggy_ips=True,
        ),
        Pool(
            PoolName("reserved"),
            (
                rng("198.51.100.10 - 198.51.100.20"),
                AddressRange(IP("203.0.113.1"), IP("203.0.113.1")),
            ),
            auto_assign=False,
            scope=AllocationScope(
                priority=10,
                namespaces=("shop",),
                namespace_selectors=(LabelSelector(match_labels=(("env", "prod"),)),),
                service_selectors=(SELECTOR,),
            ),
        ),
    ),
    l2_advertisements=(
        L2Advertisement("l2", pools=(PoolName("public"),), interfaces=("eth1",)),
        L2Advertisement("everywhere"),
    ),
    bgp_advertisements=(
        BGPAdvertisement(
            "bgp",
            pools=(PoolName("reserved"),),
            aggregation_length=24,
            local_pref=100,
            communities=(
                Community(CommunityKind.STANDARD, (65535, 65281)),
                Community(CommunityKind.LARGE, (64512, 1, 2)),
            ),
            peers=(PeerName("tor"),),
            node_selectors=(SELECTOR,),
        ),
    ),
    peers=(
        BGPPeer(
            PeerName("tor"),
            my_asn=64512,
            peer_asn=64513,
            address=IP("192.0.2.254"),
            hold_time=9.0,
            keepalive_time=1.5,
            router_id=ipaddress.IPv4Address("192.0.2.1"),
            source_address=IP("192.0.2.2"),
            ebgp_multihop=True,
            password=Secret("hunter2-s3cret"),
            bfd_profile="fast",
        ),
        BGPPeer(
            PeerName("2001:db8::fe"),
            my_asn=64512,
            peer_asn=64512,
            address=IP("2001:db8::fe"),
            port=1179,
            password_secret=SecretRef("lbctl-system", "bgp-auth"),
        ),
    ),
    bfd_profiles=(BFDProfile("fast", receive_interval_ms=100),),
    source_format=ConfigFormat.METALLB,
)


def test_config_renders_to_the_golden_json() -> None:
    text = json.dumps(config_to_json(CONFIG), indent=2) + "\n"
    check_golden("render-config.json", text)


def test_inline_password_is_redacted_and_secret_reference_shown() -> None:
    text = json.dumps(config_to_json(CONFIG))
    assert "hunter2" not in text
    tor, v6 = config_to_json(CONFIG)["peers"]  # type: ignore[misc]
    assert tor["password"] == "<redacted>"  # type: ignore[index,call-overload]
    assert v6["password"] is None  # type: ignore[index,call-overload]
    assert v6["passwordSecret"] == {  # type: ignore[index,call-overload]
        "namespace": "lbctl-system",
        "name": "bgp-auth",
        "key": "password",
    }


def test_pool_sizes_per_family_exclude_buggy_ips_and_stay_exact_for_a_slash_64() -> None:
    public, reserved = config_to_json(CONFIG)["pools"]  # type: ignore[misc]
    assert public["size"] == {"IPv4": 254, "IPv6": 2**64}  # type: ignore[index,call-overload]
    assert reserved["size"] == {"IPv4": 12}  # type: ignore[index,call-overload]


def test_range_without_text_renders_as_first_dash_last() -> None:
    reserved = config_to_json(CONFIG)["pools"][1]  # type: ignore[index]
    assert reserved["addresses"] == [  # type: ignore[index,call-overload]
        "198.51.100.10 - 198.51.100.20",
        "203.0.113.1-203.0.113.1",
    ]


def test_rendering_is_deterministic_and_json_serialisable() -> None:
    assert json.dumps(config_to_json(CONFIG)) == json.dumps(config_to_json(CONFIG))
    assert config_to_json(Config()) == {
        "format": "lbctl",
        "allowRenumber": False,
        "pools": [],
        "l2Advertisements": [],
        "bgpAdvertisements": [],
        "peers": [],
        "bfdProfiles": [],
    }
