"""ARP/NDP frames of the layer-2 announcer: exact bytes (golden files), the parsers' verdicts, and
round trips between builders and parsers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from lbctl.lab.l2probe import replying_mac, who_has
from speaker.announcers.layer2 import frames
from speaker.announcers.layer2.frames import (
    Advertisement,
    ArpRequest,
    Claim,
    NeighborSolicitation,
    mac_address,
)

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
FRAMES_PY = Path(frames.__file__)

OWNER = mac_address("02:00:00:00:01:01")
ASKER = mac_address("02:00:00:00:02:64")
VIP4 = IPv4Address("192.0.2.200")
VIP6 = IPv6Address("2001:db8::200")
ASKER4 = IPv4Address("192.0.2.100")
ASKER6 = IPv6Address("2001:db8::100")
ARP_ASK = ArpRequest(ASKER, ASKER4, VIP4)
ARP_PROBE = ArpRequest(ASKER, IPv4Address("0.0.0.0"), VIP4)
NS_ASK = NeighborSolicitation(ASKER, ASKER6, VIP6, ASKER)
NS_DAD = NeighborSolicitation(ASKER, IPv6Address("::"), VIP6, None)


def hexdump(frame: bytes) -> str:
    """16 bytes a line with offsets: a golden diff then points at the field that moved."""
    return "".join(f"{at:04x}  {frame[at : at + 16].hex(' ')}\n" for at in range(0, len(frame), 16))


def check_golden(name: str, text: str) -> None:
    """Compare with tests/data/golden/NAME; LBCTL_UPDATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN / name
    if os.environ.get("LBCTL_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with LBCTL_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


BUILDERS: list[tuple[str, Callable[[], bytes]]] = [
    ("l2-garp", lambda: frames.gratuitous_arp(OWNER, VIP4)),
    ("l2-arp-probe", lambda: frames.arp_probe(OWNER, VIP4)),
    ("l2-arp-reply", lambda: frames.arp_reply(OWNER, ARP_ASK)),
    ("l2-arp-reply-to-probe", lambda: frames.arp_reply(OWNER, ARP_PROBE)),
    ("l2-unsolicited-na", lambda: frames.unsolicited_na(OWNER, VIP6)),
    ("l2-na-reply", lambda: frames.na_reply(OWNER, NS_ASK)),
    ("l2-na-reply-to-dad", lambda: frames.na_reply(OWNER, NS_DAD)),
    ("l2-dad-ns", lambda: frames.dad_solicitation(OWNER, VIP6)),
    ("l2-ns", lambda: frames.neighbor_solicitation(ASKER, ASKER6, VIP6)),
]


@pytest.mark.parametrize(("name", "build"), BUILDERS, ids=[name for name, _ in BUILDERS])
def test_frame_bytes_match_the_golden_file(name: str, build: Callable[[], bytes]) -> None:
    check_golden(f"{name}.hex", hexdump(build()))


def test_golden_files_have_no_strays() -> None:
    names = {f"{name}.hex" for name, _ in BUILDERS}
    assert {p.name for p in GOLDEN.glob("l2-*.hex")} == names


# -- what the builders say, field by field (why the golden bytes are right) ---------------------


def test_gratuitous_arp_is_a_broadcast_request_with_sender_and_target_the_vip() -> None:
    frame = frames.gratuitous_arp(OWNER, VIP4)
    pkt = Ether(frame)
    assert (pkt.dst, pkt.src) == ("ff:ff:ff:ff:ff:ff", OWNER)
    assert (pkt[ARP].op, pkt[ARP].psrc, pkt[ARP].pdst) == (1, str(VIP4), str(VIP4))
    assert pkt[ARP].hwsrc == OWNER
    assert len(frame) == 60, "padded to the Ethernet minimum"


def test_arp_probe_asks_from_the_unspecified_address() -> None:
    pkt = Ether(frames.arp_probe(OWNER, VIP4))
    assert (pkt[ARP].op, pkt[ARP].psrc, pkt[ARP].pdst) == (1, "0.0.0.0", str(VIP4))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff"


def test_arp_reply_is_unicast_to_the_asker() -> None:
    pkt = Ether(frames.arp_reply(OWNER, ARP_ASK))
    assert pkt.dst == ASKER
    assert (pkt[ARP].op, pkt[ARP].hwsrc, pkt[ARP].psrc) == (2, OWNER, str(VIP4))
    assert (pkt[ARP].hwdst, pkt[ARP].pdst) == (ASKER, str(ASKER4))


def test_unsolicited_na_goes_to_all_nodes_with_override_and_target_lladdr() -> None:
    frame = frames.unsolicited_na(OWNER, VIP6)
    assert frames.parse_advertisement(frame) == Advertisement(
        source=VIP6,
        dst=IPv6Address("ff02::1"),
        target=VIP6,
        target_lladdr=OWNER,
        router=False,
        solicited=False,
        override=True,
    )
    pkt = Ether(frame)
    assert pkt.dst == "33:33:00:00:00:01"
    assert pkt[IPv6].hlim == 255


def test_na_reply_is_solicited_and_unicast_to_the_solicitor() -> None:
    frame = frames.na_reply(OWNER, NS_ASK)
    adv = frames.parse_advertisement(frame)
    assert adv is not None
    assert (adv.dst, adv.solicited, adv.override, adv.target_lladdr) == (ASKER6, True, True, OWNER)
    assert Ether(frame).dst == ASKER


def test_na_reply_to_duplicate_address_detection_goes_to_all_nodes_unsolicited() -> None:
    adv = frames.parse_advertisement(frames.na_reply(OWNER, NS_DAD))
    assert adv is not None
    assert (adv.dst, adv.solicited, adv.override) == (IPv6Address("ff02::1"), False, True)


def test_na_checksum_is_what_scapy_computes_from_scratch() -> None:
    frame = frames.unsolicited_na(OWNER, VIP6)
    pkt = Ether(frame)
    sent = pkt[ICMPv6ND_NA].cksum
    del pkt[ICMPv6ND_NA].cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == sent


macs = st.binary(min_size=6, max_size=6).map(lambda b: mac_address(b.hex(":")))
ipv4s = st.integers(1, 2**32 - 2).map(IPv4Address)
ipv6s = st.integers(1, 2**128 - 1).map(IPv6Address).filter(lambda ip: not ip.is_multicast)
# scapy builds slowly (and more so on a loaded machine): a few dozen cases, no time limit
SCAPY_PACE = settings(max_examples=30, deadline=None)


@SCAPY_PACE
@given(mac=macs, vip=ipv4s)
def test_arp_frames_are_the_bytes_scapy_builds(mac: frames.MacAddress, vip: IPv4Address) -> None:
    ether = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac)
    garp = ether / ARP(op=1, hwsrc=mac, psrc=str(vip), hwdst="00:00:00:00:00:00", pdst=str(vip))
    assert frames.gratuitous_arp(mac, vip) == bytes(garp).ljust(60, b"\x00")
    reply = Ether(dst=ASKER, src=mac) / ARP(
        op=2, hwsrc=mac, psrc=str(vip), hwdst=ASKER, pdst=str(ASKER4)
    )
    asked = ArpRequest(ASKER, ASKER4, vip)
    assert frames.arp_reply(mac, asked) == bytes(reply).ljust(60, b"\x00")


@SCAPY_PACE
@given(mac=macs, vip=ipv6s, asker=ipv6s)
def test_ndp_frames_are_the_bytes_scapy_builds(
    mac: frames.MacAddress, vip: IPv6Address, asker: IPv6Address
) -> None:
    """Checksums included, over any addresses (scapy built these frames before)."""
    na = (
        Ether(dst=ASKER, src=mac)
        / IPv6(src=str(vip), dst=str(asker), hlim=255)
        / ICMPv6ND_NA(tgt=str(vip), R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
    )
    asked = NeighborSolicitation(ASKER, asker, vip, None)
    assert frames.na_reply(mac, asked) == bytes(na)
    group, group_mac = frames.solicited_node(vip)
    ns = (
        Ether(dst=group_mac, src=mac)
        / IPv6(src=str(asker), dst=str(group), hlim=255)
        / ICMPv6ND_NS(tgt=str(vip))
        / ICMPv6NDOptSrcLLAddr(lladdr=mac)
    )
    assert frames.neighbor_solicitation(mac, asker, vip) == bytes(ns)


def test_dad_solicitation_goes_to_the_solicited_node_group_without_options() -> None:
    pkt = Ether(frames.dad_solicitation(OWNER, VIP6))
    assert (pkt[IPv6].src, pkt[IPv6].dst) == ("::", "ff02::1:ff00:200")
    assert pkt.dst == "33:33:ff:00:02:00"
    assert pkt[ICMPv6ND_NS].tgt == str(VIP6)
    assert not pkt[ICMPv6ND_NS].payload


@pytest.mark.parametrize(
    ("vip", "kind"),
    [pytest.param(VIP4, "arp", id="ipv4"), pytest.param(VIP6, "ndp", id="ipv6")],
)
def test_announcement_and_probe_pick_the_protocol_by_family(vip: IPv4Address, kind: str) -> None:
    announcement, probe = frames.announcement(OWNER, vip), frames.probe(OWNER, vip)
    if kind == "arp":
        assert announcement == frames.gratuitous_arp(OWNER, VIP4)
        assert probe == frames.arp_probe(OWNER, VIP4)
    else:
        assert announcement == frames.unsolicited_na(OWNER, VIP6)
        assert probe == frames.dad_solicitation(OWNER, VIP6)


# -- parsers -------------------------------------------------------------------------------------


REQUESTS = [
    pytest.param(
        lambda: bytes(
            Ether(dst="ff:ff:ff:ff:ff:ff", src=ASKER)
            / ARP(op=1, hwsrc=ASKER, psrc=str(ASKER4), pdst=str(VIP4))
        ),
        ARP_ASK,
        id="arp-who-has-unpadded",
    ),
    pytest.param(lambda: frames.arp_probe(ASKER, VIP4), ARP_PROBE, id="arp-probe"),
    pytest.param(
        lambda: frames.neighbor_solicitation(ASKER, ASKER6, VIP6), NS_ASK, id="ns-with-lladdr"
    ),
    pytest.param(lambda: frames.dad_solicitation(ASKER, VIP6), NS_DAD, id="dad-ns"),
    pytest.param(lambda: who_has(ASKER, ASKER4, VIP4), ARP_ASK, id="bed-observer-arp"),
    pytest.param(lambda: who_has(ASKER, ASKER6, VIP6), NS_ASK, id="bed-observer-ns"),
]


@pytest.mark.parametrize(("build", "expected"), REQUESTS)
def test_parse_request_reads_what_is_asked(
    build: Callable[[], bytes], expected: frames.Request
) -> None:
    assert frames.parse_request(build()) == expected


def _ns(src: str, dst: str, hlim: int = 255, *, lladdr: bool = True, code: int = 0) -> bytes:
    group_mac = "33:33:ff:00:02:00"
    pkt = Ether(dst=group_mac, src=ASKER) / IPv6(src=src, dst=dst, hlim=hlim)
    pkt = pkt / ICMPv6ND_NS(tgt=str(VIP6), code=code)
    if lladdr:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=ASKER)
    return bytes(pkt)


NOT_REQUESTS = [
    pytest.param(lambda: frames.gratuitous_arp(OWNER, VIP4), id="garp-is-an-announcement"),
    pytest.param(lambda: frames.arp_reply(OWNER, ARP_ASK), id="arp-reply"),
    pytest.param(lambda: frames.unsolicited_na(OWNER, VIP6), id="na"),
    pytest.param(lambda: _ns(str(ASKER6), "ff02::1:ff00:200", hlim=64), id="ns-hop-limit-64"),
    pytest.param(lambda: _ns(str(ASKER6), "ff02::1:ff00:200", code=1), id="ns-code-1"),
    pytest.param(lambda: _ns("::", "ff02::1:ff00:200"), id="dad-ns-with-lladdr"),
    pytest.param(lambda: _ns("::", "ff02::1", lladdr=False), id="dad-ns-not-to-its-group"),
    pytest.param(lambda: frames.arp_probe(OWNER, VIP4)[:41], id="truncated-arp"),
    pytest.param(lambda: frames.dad_solicitation(OWNER, VIP6)[:70], id="truncated-ns"),
    pytest.param(lambda: bytes(Ether(src=ASKER) / IPv6() / (b"x" * 40)), id="other-ipv6"),
    pytest.param(lambda: b"", id="empty"),
]


@pytest.mark.parametrize("build", NOT_REQUESTS)
def test_parse_request_ignores_what_no_holder_answers(build: Callable[[], bytes]) -> None:
    assert frames.parse_request(build()) is None


def test_ns_option_with_length_zero_is_discarded() -> None:
    frame = bytearray(frames.neighbor_solicitation(ASKER, ASKER6, VIP6))
    frame[-7] = 0  # the option's length, in units of 8 bytes
    assert frames.parse_request(bytes(frame)) is None


CLAIMS = [
    pytest.param(lambda: frames.gratuitous_arp(OWNER, VIP4), Claim(VIP4, OWNER), id="garp"),
    pytest.param(lambda: frames.arp_reply(OWNER, ARP_ASK), Claim(VIP4, OWNER), id="arp-reply"),
    pytest.param(lambda: who_has(ASKER, ASKER4, VIP4), Claim(ASKER4, ASKER), id="arp-asker"),
    pytest.param(lambda: frames.unsolicited_na(OWNER, VIP6), Claim(VIP6, OWNER), id="na"),
    pytest.param(lambda: frames.na_reply(OWNER, NS_ASK), Claim(VIP6, OWNER), id="na-reply"),
    pytest.param(lambda: who_has(ASKER, ASKER6, VIP6), Claim(ASKER6, ASKER), id="ns-asker"),
    pytest.param(lambda: frames.arp_probe(OWNER, VIP4), None, id="arp-probe-claims-nothing"),
    pytest.param(lambda: frames.dad_solicitation(OWNER, VIP6), None, id="dad-claims-nothing"),
]


@pytest.mark.parametrize(("build", "expected"), CLAIMS)
def test_parse_claim_reads_who_says_an_address_is_at_a_mac(
    build: Callable[[], bytes], expected: Claim | None
) -> None:
    assert frames.parse_claim(build()) == expected


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(ARP_ASK, id="arp"),
        pytest.param(ARP_PROBE, id="arp-probe"),
        pytest.param(NS_ASK, id="ns"),
        pytest.param(NS_DAD, id="dad"),
    ],
)
def test_every_reply_claims_the_target_for_the_holder(request_: frames.Request) -> None:
    reply = frames.reply(OWNER, request_)
    assert frames.parse_claim(reply) == Claim(request_.target, OWNER)
    assert frames.parse_request(reply) is None, "a reply is never taken for a question"


@pytest.mark.parametrize("vip", [VIP4, VIP6], ids=["ipv4", "ipv6"])
def test_the_bed_observer_reads_the_holder_mac_from_a_reply(vip: IPv4Address) -> None:
    request = frames.parse_request(who_has(ASKER, ASKER4 if vip.version == 4 else ASKER6, vip))
    assert request is not None
    assert replying_mac(frames.reply(OWNER, request), ip_address(vip)) == OWNER


def test_solicited_node_group_of_an_address() -> None:
    group, mac = frames.solicited_node(IPv6Address("2001:db8::1:2345"))
    assert (str(group), mac) == ("ff02::1:ff01:2345", "33:33:ff:01:23:45")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("02:00:00:00:01:0A", "02:00:00:00:01:0a", id="upper-case"),
        pytest.param("02-00-00-00-01-0a", "02:00:00:00:01:0a", id="dashes"),
    ],
)
def test_mac_address_has_one_spelling(text: str, expected: str) -> None:
    assert mac_address(text) == expected


@pytest.mark.parametrize("text", ["02:00:00:00:01", "02:00:00:00:01:0g", "0200.0000.010a"])
def test_mac_address_rejects_what_is_not_one(text: str) -> None:
    with pytest.raises(ValueError, match="is not a MAC address"):
        mac_address(text)


# -- layering ------------------------------------------------------------------------------------


def test_frames_imports_only_pure_stdlib() -> None:
    tree = ast.parse(FRAMES_PY.read_text(), filename=str(FRAMES_PY))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    allowed = {"__future__", "re", "struct", "dataclasses", "ipaddress", "typing"}
    assert imported <= allowed, f"frames.py imports {sorted(imported - allowed)}"


def test_the_speaker_process_never_loads_scapy() -> None:
    """Any scapy import costs a speaker about 29 MiB of RSS (docs/performance.md, "Speaker
    RSS"); scapy is the tests' and the lab's tool only."""
    code = "import sys, speaker.main; print(sorted(m for m in sys.modules if 'scapy' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
