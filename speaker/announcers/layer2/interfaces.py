"""Which interface carries a VIP: pure values and the choice, from a list of interfaces that
netlink.InterfaceView reads; used by the speaker to build the layer-2 announcer's desired state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol

from speaker.announcers.layer2.frames import MacAddress

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True, order=True)
class Link:
    """What an announcer's socket is bound to. A changed index (the link was re-created) or MAC
    is a different Link: its socket is reopened and its VIPs announced again."""

    name: str
    index: int
    mac: MacAddress


@dataclass(frozen=True)
class Interface:
    """An Ethernet-like interface (not loopback, not NOARP) and its addresses with prefix."""

    link: Link
    addresses: tuple[IPInterface, ...]
    up: bool

    @property
    def name(self) -> str:
        return self.link.name

    def holds_subnet_of(self, vip: IPAddress) -> int | None:
        """The longest prefix of this interface's subnets that holds `vip`, else None. Host
        routes (/32, /128) don't count: a VIP put on an interface says nothing of the link."""
        lengths = [
            addr.network.prefixlen
            for addr in self.addresses
            if addr.version == vip.version
            and addr.network.prefixlen < addr.max_prefixlen
            and vip in addr.network
        ]
        return max(lengths, default=None)


def interface_for(
    vip: IPAddress, interfaces: Iterable[Interface], allowed: Sequence[str] = ()
) -> Interface | None:
    """The interface to answer for `vip` on, or None (the speaker's NoInterfaceForIP).

    Without `allowed` (the advertisement names no interfaces): the up interface whose subnet
    holds the VIP, the longest prefix winning, then the lowest index. With `allowed`: only those
    names, preferring one whose subnet holds the VIP, else the first up one in `allowed` order
    (the advertisement said where; MetalLB's interfaces field needs no subnet either).
    """
    candidates = [i for i in interfaces if i.up and (not allowed or i.name in allowed)]
    holders = [(i.holds_subnet_of(vip), i) for i in candidates]
    best = [(-prefix, i.link.index, i) for prefix, i in holders if prefix is not None]
    if best:
        return min(best, key=lambda row: row[:2])[2]
    if not allowed:
        return None
    by_name = {i.name: i for i in candidates}
    return next((by_name[name] for name in allowed if name in by_name), None)


class InterfaceSource(Protocol):
    """Where the announcer learns interfaces from (netlink.InterfaceView; a fake in tests)."""

    @property
    def interfaces(self) -> tuple[Interface, ...]: ...

    def subscribe(self, on_change: Callable[[tuple[Interface, ...]], None]) -> None: ...
