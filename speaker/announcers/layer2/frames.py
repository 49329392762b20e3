"""ARP and NDP frames as data: pure builders and parsers of raw bytes into typed requests and
claims; used by the layer-2 announcer.

Plain struct packing, not scapy: importing any scapy layer loads scapy's whole configuration and
its table of 50,000 MAC vendors, about 29 MiB of a speaker's RSS (docs/performance.md, "Speaker
RSS"), for nine fixed-layout frames. The tests check every frame against scapy's dissection and
golden bytes."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import NewType

MacAddress = NewType("MacAddress", str)  # lower case, colon separated: "02:00:00:00:01:01"
IPAddress = IPv4Address | IPv6Address

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = MacAddress("ff:ff:ff:ff:ff:ff")
ZERO_MAC = MacAddress("00:00:00:00:00:00")
UNSPECIFIED4 = IPv4Address("0.0.0.0")
UNSPECIFIED6 = IPv6Address("::")
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = MacAddress("33:33:00:00:00:01")  # RFC 2464 §7: 33:33 + the group's low 32 bits
MIN_FRAME = 60  # Ethernet minimum without FCS; short ARP frames are padded, as NICs would
ND_HOP_LIMIT = 255  # RFC 4861 §7.1: anything else may have crossed a router, so it is dropped
ICMPV6 = 58
ND_NS, ND_NA = 135, 136
OPT_SOURCE_LLADDR, OPT_TARGET_LLADDR = 1, 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20

_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_ETHER_LEN = 14
_ARP_END = _ETHER_LEN + 28
_IP6_END = _ETHER_LEN + 40
_ND_FIXED = 24  # ICMPv6 type, code, checksum, flags/reserved, target


def mac_address(text: str) -> MacAddress:
    """A MAC in the one spelling this package compares: lower case, colon separated."""
    spelled = text.replace("-", ":").lower()
    if not _MAC_RE.fullmatch(spelled):
        raise ValueError(f"{text!r} is not a MAC address")
    return MacAddress(spelled)


def _mac_of(raw: bytes) -> MacAddress:
    return MacAddress(raw.hex(":"))


# -- what a frame says -----------------------------------------------------------------------


@dataclass(frozen=True)
class ArpRequest:
    """An ARP who-has for `target`; sender_ip is 0.0.0.0 for an RFC 5227 probe."""

    sender_mac: MacAddress
    sender_ip: IPv4Address
    target: IPv4Address


@dataclass(frozen=True)
class NeighborSolicitation:
    """An NS for `target`; `source` is :: for duplicate address detection (or a probe)."""

    sender_mac: MacAddress  # the Ethernet source
    source: IPv6Address
    target: IPv6Address
    source_lladdr: MacAddress | None  # the source link-layer address option, if any


Request = ArpRequest | NeighborSolicitation


@dataclass(frozen=True)
class Claim:
    """A frame telling its receivers' neighbour tables that `ip` is at `mac` (a gratuitous ARP,
    an ARP reply or request from that sender, an NA, an NS with a source link-layer option)."""

    ip: IPAddress
    mac: MacAddress


# -- builders --------------------------------------------------------------------------------


def _padded(frame: bytes) -> bytes:
    return frame.ljust(MIN_FRAME, b"\x00")


def _mac_bytes(mac: MacAddress) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ether(dst: MacAddress, src: MacAddress, ethertype: int) -> bytes:
    return _mac_bytes(dst) + _mac_bytes(src) + struct.pack("!H", ethertype)


def _arp_frame(
    op: int, dst: MacAddress, mac: MacAddress, sender: IPv4Address, target: IPv4Address
) -> bytes:
    """Ethernet + ARP (Ethernet/IPv4, RFC 826): `mac` at `sender` asks for or tells `target`;
    the target hardware address is the Ethernet destination, zero when broadcast."""
    target_mac = ZERO_MAC if dst == BROADCAST else dst
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
    arp += _mac_bytes(mac) + sender.packed + _mac_bytes(target_mac) + target.packed
    return _padded(_ether(dst, mac, ETH_P_ARP) + arp)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`, padded to whole 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmpv6_frame(
    dst_mac: MacAddress, mac: MacAddress, src: IPv6Address, dst: IPv6Address, icmp: bytes
) -> bytes:
    """Ethernet + IPv6 (hop limit 255) + an ICMPv6 message whose checksum field is zero; the
    checksum covers the RFC 8200 §8.1 pseudo-header."""
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(icmp), ICMPV6)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, ND_HOP_LIMIT) + src.packed + dst.packed
    return _ether(dst_mac, mac, ETH_P_IPV6) + ip6 + icmp


def _lladdr_option(kind: int, mac: MacAddress) -> bytes:
    return struct.pack("!BB", kind, 1) + _mac_bytes(mac)  # length in units of 8 bytes


def gratuitous_arp(mac: MacAddress, vip: IPv4Address) -> bytes:
    """RFC 5227 announcement: a broadcast request with sender = target = VIP (Linux updates an
    existing entry from it even within its locktime, and creates one with arp_accept)."""
    return _arp_frame(1, BROADCAST, mac, vip, vip)


def arp_probe(mac: MacAddress, target: IPv4Address) -> bytes:
    """RFC 5227 probe: a broadcast who-has with sender IP 0.0.0.0, which pollutes no cache."""
    return _arp_frame(1, BROADCAST, mac, UNSPECIFIED4, target)


def arp_reply(mac: MacAddress, request: ArpRequest) -> bytes:
    """The is-at for `request.target`, unicast to the asker (to 0.0.0.0 for a probe)."""
    return _arp_frame(2, request.sender_mac, mac, request.target, request.sender_ip)


def _advertisement(
    mac: MacAddress, vip: IPv6Address, dst: IPv6Address, dst_mac: MacAddress, *, solicited: bool
) -> bytes:
    flags = NA_OVERRIDE | (NA_SOLICITED if solicited else 0)
    icmp = struct.pack("!BBHB3x", ND_NA, 0, 0, flags) + vip.packed
    icmp += _lladdr_option(OPT_TARGET_LLADDR, mac)
    return _icmpv6_frame(dst_mac, mac, vip, dst, icmp)


def unsolicited_na(mac: MacAddress, vip: IPv6Address) -> bytes:
    """RFC 4861 §7.2.6: to all-nodes, Override set (a Linux client replaces the MAC of an
    existing entry and marks it STALE), Solicited clear, with the target link-layer option."""
    return _advertisement(mac, vip, ALL_NODES, ALL_NODES_MAC, solicited=False)


def na_reply(mac: MacAddress, request: NeighborSolicitation) -> bytes:
    """RFC 4861 §7.2.4: Solicited + Override to the solicitor; to all-nodes, Solicited clear,
    when the NS came from the unspecified address (duplicate address detection)."""
    if request.source == UNSPECIFIED6:
        return _advertisement(mac, request.target, ALL_NODES, ALL_NODES_MAC, solicited=False)
    dst_mac = request.source_lladdr or request.sender_mac
    return _advertisement(mac, request.target, request.source, dst_mac, solicited=True)


def _solicitation(mac: MacAddress, source: IPv6Address, target: IPv6Address) -> bytes:
    """An NS to the target's solicited-node group; with the source link-layer option unless
    it comes from :: (RFC 4861 §4.3)."""
    group, group_mac = solicited_node(target)
    icmp = struct.pack("!BBH4x", ND_NS, 0, 0) + target.packed
    if source != UNSPECIFIED6:
        icmp += _lladdr_option(OPT_SOURCE_LLADDR, mac)
    return _icmpv6_frame(group_mac, mac, source, group, icmp)


def solicited_node(target: IPv6Address) -> tuple[IPv6Address, MacAddress]:
    """The solicited-node group of an address and its Ethernet MAC (RFC 4291 §2.7.1, 2464)."""
    low = target.packed[-3:]
    group = IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + low)
    return group, MacAddress("33:33:" + group.packed[-4:].hex(":"))


def dad_solicitation(mac: MacAddress, target: IPv6Address) -> bytes:
    """An NS from :: to the target's solicited-node group, no options (RFC 4862 §5.4.2): asks
    who holds `target` without claiming any address."""
    return _solicitation(mac, UNSPECIFIED6, target)


def neighbor_solicitation(mac: MacAddress, source: IPv6Address, target: IPv6Address) -> bytes:
    """An NS from `source` with the source link-layer option (what a client sends)."""
    return _solicitation(mac, source, target)


def announcement(mac: MacAddress, vip: IPAddress) -> bytes:
    """What a new owner sends: a gratuitous ARP (IPv4) or an unsolicited NA (IPv6)."""
    if isinstance(vip, IPv4Address):
        return gratuitous_arp(mac, vip)
    return unsolicited_na(mac, vip)


def probe(mac: MacAddress, vip: IPAddress) -> bytes:
    """What asks who holds `vip` without claiming it: an ARP probe or a DAD-style NS."""
    if isinstance(vip, IPv4Address):
        return arp_probe(mac, vip)
    return dad_solicitation(mac, vip)


def reply(mac: MacAddress, request: Request) -> bytes:
    """The answer of the holder of `request.target` at `mac`."""
    if isinstance(request, ArpRequest):
        return arp_reply(mac, request)
    return na_reply(mac, request)


# -- parsers ---------------------------------------------------------------------------------
# Plain struct reads, not scapy dissection: every ARP and NDP frame on the LAN passes here, and
# a scapy dissection costs about fifty times more.


@dataclass(frozen=True)
class _Arp:
    op: int
    sender_mac: MacAddress
    sender_ip: IPv4Address
    target: IPv4Address


def _arp(frame: bytes) -> _Arp | None:
    if len(frame) < _ARP_END or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, _ETHER_LEN)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (1, 2):
        return None
    return _Arp(
        op=op,
        sender_mac=_mac_of(frame[22:28]),
        sender_ip=IPv4Address(frame[28:32]),
        target=IPv4Address(frame[38:42]),
    )


@dataclass(frozen=True)
class _Nd:
    kind: int  # ND_NS or ND_NA
    flags: int  # the first byte after the checksum (NA: R, S, O)
    sender_mac: MacAddress
    source: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    options: dict[int, MacAddress]  # link-layer address options by type


def _nd(frame: bytes) -> _Nd | None:
    """An NS or NA that passes RFC 4861 §7.1's cheap checks, else None."""
    if len(frame) < _IP6_END + _ND_FIXED or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return None
    payload_len, next_header, hop_limit = struct.unpack_from("!HBB", frame, _ETHER_LEN + 4)
    kind, code = frame[_IP6_END], frame[_IP6_END + 1]
    if frame[_ETHER_LEN] >> 4 != 6 or next_header != ICMPV6 or hop_limit != ND_HOP_LIMIT:
        return None
    if kind not in (ND_NS, ND_NA) or code != 0 or payload_len < _ND_FIXED:
        return None
    end = min(len(frame), _IP6_END + payload_len)
    options = _lladdr_options(frame, _IP6_END + _ND_FIXED, end)
    target = IPv6Address(frame[_IP6_END + 8 : _IP6_END + 24])
    if options is None or target.is_multicast:
        return None
    return _Nd(
        kind=kind,
        flags=frame[_IP6_END + 4],
        sender_mac=_mac_of(frame[6:12]),
        source=IPv6Address(frame[_ETHER_LEN + 8 : _ETHER_LEN + 24]),
        dst=IPv6Address(frame[_ETHER_LEN + 24 : _IP6_END]),
        target=target,
        options=options,
    )


def _lladdr_options(frame: bytes, at: int, end: int) -> dict[int, MacAddress] | None:
    """Link-layer address options between `at` and `end`; None if any option has length 0
    (RFC 4861 §4.6: such a packet is discarded)."""
    found: dict[int, MacAddress] = {}
    while at + 2 <= end:
        kind, units = frame[at], frame[at + 1]
        if units == 0:
            return None
        if kind in (OPT_SOURCE_LLADDR, OPT_TARGET_LLADDR) and at + 8 <= end:
            found[kind] = _mac_of(frame[at + 2 : at + 8])
        at += units * 8
    return found


def parse_request(frame: bytes) -> Request | None:
    """The question a frame asks, if it is one a holder answers: an ARP who-has (a probe too,
    not a gratuitous ARP) or a valid NS; else None."""
    if (arp := _arp(frame)) is not None:
        if arp.op != 1 or arp.sender_ip == arp.target:
            return None
        return ArpRequest(arp.sender_mac, arp.sender_ip, arp.target)
    nd = _nd(frame)
    if nd is None or nd.kind != ND_NS:
        return None
    source_lladdr = nd.options.get(OPT_SOURCE_LLADDR)
    # RFC 4861 §7.1.1: from ::, only to a solicited-node group and without the option.
    from_unspecified = nd.source == UNSPECIFIED6
    if from_unspecified and (source_lladdr or nd.dst != solicited_node(nd.target)[0]):
        return None
    return NeighborSolicitation(nd.sender_mac, nd.source, nd.target, source_lladdr)


def parse_claim(frame: bytes) -> Claim | None:
    """Whom a frame tells that an address is at a MAC, else None (see Claim)."""
    if (arp := _arp(frame)) is not None:
        if arp.sender_ip == UNSPECIFIED4:
            return None
        return Claim(arp.sender_ip, arp.sender_mac)
    nd = _nd(frame)
    if nd is None:
        return None
    if nd.kind == ND_NA:
        return Claim(nd.target, nd.options.get(OPT_TARGET_LLADDR, nd.sender_mac))
    source_lladdr = nd.options.get(OPT_SOURCE_LLADDR)
    if nd.source == UNSPECIFIED6 or source_lladdr is None:
        return None
    return Claim(nd.source, source_lladdr)


@dataclass(frozen=True)
class Advertisement:
    """A parsed NA: whom it is for, what it claims, and its flags (RFC 4861 §4.4)."""

    source: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    target_lladdr: MacAddress | None
    router: bool
    solicited: bool
    override: bool


def parse_advertisement(frame: bytes) -> Advertisement | None:
    """An NA that passes the cheap checks, with its flags; else None."""
    nd = _nd(frame)
    if nd is None or nd.kind != ND_NA:
        return None
    return Advertisement(
        source=nd.source,
        dst=nd.dst,
        target=nd.target,
        target_lladdr=nd.options.get(OPT_TARGET_LLADDR),
        router=bool(nd.flags & NA_ROUTER),
        solicited=bool(nd.flags & NA_SOLICITED),
        override=bool(nd.flags & NA_OVERRIDE),
    )
