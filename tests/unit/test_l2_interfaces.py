"""Which interface carries a VIP (the pure choice) and which netlink links count as interfaces."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

import pytest

from speaker.announcers.layer2.frames import mac_address
from speaker.announcers.layer2.interfaces import Interface, Link, interface_for
from speaker.announcers.layer2.netlink import (
    ARPHRD_ETHER,
    IFF_LOOPBACK,
    IFF_LOWER_UP,
    IFF_NOARP,
    IFF_UP,
    AddressRow,
    LinkRow,
    assemble,
)


def iface(name: str, index: int, *addresses: str, up: bool = True) -> Interface:
    mac = mac_address(f"02:00:00:00:00:{index:02x}")
    return Interface(Link(name, index, mac), tuple(ip_interface(a) for a in addresses), up)


ETH0 = iface("eth0", 2, "192.0.2.11/24", "2001:db8::11/64", "fe80::1/64")
ETH1 = iface("eth1", 3, "198.51.100.5/25")
NARROW = iface("vlan10", 4, "192.0.2.129/25")  # a longer prefix inside eth0's subnet
DOWN = iface("eth2", 5, "203.0.113.5/24", up=False)
BARE = iface("eth3", 6)  # no addresses: only an advertisement can name it
HOST_ROUTE = iface("eth4", 7, "203.0.113.200/32", "2001:db8:5::200/128")
TWIN = iface("eth5", 8, "198.51.100.6/25")  # same subnet as eth1, higher index
ALL = [ETH0, ETH1, NARROW, DOWN, BARE, HOST_ROUTE, TWIN]

CHOICES = [
    pytest.param("192.0.2.200", (), "vlan10", id="longest-prefix-wins"),
    pytest.param("192.0.2.100", (), "eth0", id="subnet-holder"),
    pytest.param("2001:db8::200", (), "eth0", id="ipv6-subnet-holder"),
    pytest.param("198.51.100.50", (), "eth1", id="same-subnet-lowest-index-wins"),
    pytest.param("203.0.113.7", (), None, id="down-interface-never"),
    pytest.param("203.0.113.200", (), None, id="host-route-is-no-subnet"),
    pytest.param("2001:db8:5::200", (), None, id="ipv6-host-route-is-no-subnet"),
    pytest.param("10.9.9.9", (), None, id="no-subnet-holds-it"),
    pytest.param("192.0.2.100", ("eth1", "eth0"), "eth0", id="named-holder-preferred"),
    pytest.param("10.9.9.9", ("eth3", "eth1"), "eth3", id="named-first-up-without-subnet"),
    pytest.param("10.9.9.9", ("eth2", "eth1"), "eth1", id="named-down-skipped"),
    pytest.param("192.0.2.100", ("eth1",), "eth1", id="named-only-even-if-another-holds-it"),
    pytest.param("192.0.2.100", ("nosuch",), None, id="named-missing"),
    pytest.param("192.0.2.200", ("eth0", "vlan10"), "vlan10", id="named-longest-prefix"),
]


@pytest.mark.parametrize(("vip", "allowed", "expected"), CHOICES)
def test_interface_for_chooses_by_subnet_or_advertisement(
    vip: str, allowed: tuple[str, ...], expected: str | None
) -> None:
    chosen = interface_for(ip_address(vip), ALL, allowed)
    assert (chosen.name if chosen else None) == expected


def test_interface_for_ignores_input_order() -> None:
    vip = ip_address("198.51.100.50")
    assert interface_for(vip, ALL) == interface_for(vip, list(reversed(ALL)))


def test_interface_for_ipv4_vip_ignores_ipv6_subnets() -> None:
    only6 = iface("eth9", 9, "2001:db8::9/64")
    assert interface_for(ip_address("192.0.2.5"), [only6]) is None


ETHER_UP = IFF_UP | IFF_LOWER_UP
LINKS = [
    LinkRow(1, "lo", "00:00:00:00:00:00", IFF_UP | IFF_LOWER_UP | IFF_LOOPBACK, 772),
    LinkRow(2, "eth0", "02:00:00:00:01:01", ETHER_UP, ARPHRD_ETHER),
    LinkRow(3, "kube-ipvs0", "6a:00:00:00:00:01", IFF_NOARP, ARPHRD_ETHER),
    LinkRow(4, "eth1", "02:00:00:00:01:02", IFF_UP, ARPHRD_ETHER),  # no carrier
    LinkRow(5, "wg0", None, ETHER_UP, 65534),
]
ADDRESSES = [
    AddressRow(1, ip_interface("127.0.0.1/8")),
    AddressRow(2, ip_interface("2001:db8::11/64")),
    AddressRow(2, ip_interface("192.0.2.11/24")),
    AddressRow(3, ip_interface("192.0.2.200/32")),
]


def test_assemble_keeps_ethernet_links_with_their_addresses() -> None:
    found = assemble(LINKS, ADDRESSES)
    assert [(i.name, i.up) for i in found] == [("eth0", True), ("eth1", False)]
    eth0 = found[0]
    assert eth0.link == Link("eth0", 2, mac_address("02:00:00:00:01:01"))
    assert [str(a) for a in eth0.addresses] == ["192.0.2.11/24", "2001:db8::11/64"]


def test_assemble_is_stable_whatever_the_dump_order() -> None:
    assert assemble(LINKS, ADDRESSES) == assemble(LINKS[::-1], ADDRESSES[::-1])
