"""ARP/NDP frames of the observer and the hand-driven responder, as data."""

from __future__ import annotations

import ipaddress

import pytest

from lbctl.lab.l2probe import answer_for, replying_mac, solicited_node, who_has

ASKER = "02:00:00:00:02:65"
OWNER = "02:00:00:00:01:01"
CASES = [
    pytest.param("192.0.2.101", "192.0.2.200", id="arp"),
    pytest.param("2001:db8::101", "2001:db8::200", id="ndp"),
]


def test_solicited_node_group_and_mac() -> None:
    group, mac = solicited_node(ipaddress.IPv6Address("2001:db8::1:2345"))
    assert str(group) == "ff02::1:ff01:2345"
    assert mac == "33:33:ff:01:23:45"


@pytest.mark.parametrize(("src", "vip"), CASES)
def test_a_responder_answers_the_observer_and_the_observer_reads_its_mac(
    src: str, vip: str
) -> None:
    request = who_has(ASKER, ipaddress.ip_address(src), ipaddress.ip_address(vip))
    reply = answer_for(request, ipaddress.ip_address(vip), OWNER)
    assert reply is not None
    assert reply[:6] == bytes.fromhex(ASKER.replace(":", "")), "replies are unicast to the asker"
    assert replying_mac(reply, ipaddress.ip_address(vip)) == OWNER


@pytest.mark.parametrize(("src", "vip"), CASES)
def test_requests_for_other_addresses_are_ignored(src: str, vip: str) -> None:
    other = ipaddress.ip_address(vip) + 1
    request = who_has(ASKER, ipaddress.ip_address(src), other)
    assert answer_for(request, ipaddress.ip_address(vip), OWNER) is None
    assert replying_mac(request, other) is None, "a request is not a reply"


def test_arp_request_golden_bytes() -> None:
    frame = who_has(
        ASKER, ipaddress.IPv4Address("192.0.2.101"), ipaddress.IPv4Address("192.0.2.200")
    )
    assert frame.hex() == (
        "ffffffffffff" "020000000265" "0806"
        "0001" "0800" "06" "04" "0001" "020000000265" "c0000265" "000000000000" "c00002c8"
    )  # fmt: skip
