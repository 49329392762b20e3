"""The node's interfaces as netlink reports them (pyroute2 on the event loop), read again on every
link or address change; used by the speaker to choose each VIP's interface."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import ip_interface
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from speaker.announcers.layer2.errors import AnnounceError
from speaker.announcers.layer2.frames import mac_address
from speaker.announcers.layer2.interfaces import (
    Interface,
    IPAddress,
    IPInterface,
    Link,
    interface_for,
)
from speaker.announcers.layer2.sockets import NamespaceRunner, current_namespace

log = logging.getLogger("lbctl.speaker.layer2.netlink")

ARPHRD_ETHER = 1  # linux/if_arp.h
IFF_UP, IFF_LOOPBACK, IFF_NOARP, IFF_LOWER_UP = 0x1, 0x8, 0x80, 0x10000  # linux/if.h
# A change is several messages (`ip addr add` on a new link: NEWLINK, NEWADDR, NEWADDR for the
# link-local): wait this long after the first one, then read everything once.
SETTLE = 0.02
RETRY_AFTER = 1.0  # s before reopening a failed monitor (e.g. ENOBUFS after a flood)


@dataclass(frozen=True)
class LinkRow:
    """One RTM_NEWLINK, reduced to what the choice needs."""

    index: int
    name: str
    mac: str | None
    flags: int
    kind: int  # ARPHRD_*


@dataclass(frozen=True)
class AddressRow:
    index: int
    address: IPInterface


def assemble(links: Iterable[LinkRow], addresses: Iterable[AddressRow]) -> tuple[Interface, ...]:
    """Ethernet-like links (not loopback, not NOARP: a dummy such as kube-ipvs0 never answers)
    with their addresses; up means administratively up with carrier."""
    by_index: dict[int, list[IPInterface]] = {}
    for row in addresses:
        by_index.setdefault(row.index, []).append(row.address)
    found = []
    for link in sorted(links, key=lambda row: row.index):
        if link.kind != ARPHRD_ETHER or link.flags & (IFF_LOOPBACK | IFF_NOARP) or not link.mac:
            continue
        up = link.flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP
        found.append(
            Interface(
                link=Link(link.name, link.index, mac_address(link.mac)),
                addresses=tuple(sorted(by_index.get(link.index, []), key=str)),
                up=up,
            )
        )
    return tuple(found)


def _link_row(msg: Any) -> LinkRow:
    return LinkRow(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        mac=msg.get("address"),
        flags=int(msg["flags"]),
        kind=int(msg["ifi_type"]),
    )


def _address_row(msg: Any) -> AddressRow | None:
    text = msg.get("local") or msg.get("address")
    if text is None:
        return None
    return AddressRow(int(msg["index"]), ip_interface(f"{text}/{msg['prefixlen']}"))


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)


class InterfaceView:
    """The interfaces of the namespace it was started in, kept current from netlink events;
    subscribers are called (on the loop) after each read that changed them."""

    def __init__(
        self, *, in_netns: NamespaceRunner = current_namespace, settle: float = SETTLE
    ) -> None:
        self._subscribers: list[Callable[[tuple[Interface, ...]], None]] = []
        self._in_netns = in_netns
        self._settle = settle
        self._interfaces: tuple[Interface, ...] = ()
        self._query: Any = None  # AsyncIPRoute for dumps
        self._monitor: Any = None  # AsyncIPRoute subscribed to link and address events
        self._monitor_task: asyncio.Task[None] | None = None
        self._stale = asyncio.Event()  # a change was reported and not yet read

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        return self._interfaces

    @property
    def started(self) -> bool:
        return self._query is not None

    def subscribe(self, on_change: Callable[[tuple[Interface, ...]], None]) -> None:
        """Call `on_change(interfaces)` after every read that changed them."""
        self._subscribers.append(on_change)

    def interface_for(self, vip: IPAddress, allowed: Sequence[str] = ()) -> Interface | None:
        """interfaces.interface_for over the current view."""
        return interface_for(vip, self._interfaces, allowed)

    def _open(self) -> Any:
        try:
            return AsyncIPRoute(fileno=self._in_netns(_netlink_socket).detach())
        except OSError as err:
            raise AnnounceError("opening a netlink socket") from err

    async def start(self) -> None:
        """Subscribe, then read once (no change can fall between the two)."""
        self._monitor = await self._subscribe()
        self._query = self._open()
        await self.refresh()
        self._monitor_task = asyncio.create_task(self._run(), name="l2-interfaces")

    async def stop(self) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
            self._monitor_task = None
        for sock in (self._monitor, self._query):
            if sock is not None:
                sock.close()
        self._monitor = self._query = None

    async def refresh(self) -> tuple[Interface, ...]:
        """Read links and addresses now; tell on_change if they changed."""
        try:
            links = [_link_row(msg) async for msg in await self._query.link("dump")]
            rows = [_address_row(msg) async for msg in await self._query.addr("dump")]
        except OSError as err:
            raise AnnounceError("reading links and addresses through netlink") from err
        found = assemble(links, [row for row in rows if row is not None])
        if found != self._interfaces:
            self._interfaces = found
            log.info("interfaces_changed interfaces=%s", ",".join(i.name for i in found if i.up))
            for on_change in self._subscribers:
                try:
                    on_change(found)
                except Exception:  # the loop boundary: one subscriber must not stop the view
                    log.exception("interfaces_subscriber_failed subscriber=%r", on_change)
        return found

    async def _run(self) -> None:
        reader = asyncio.create_task(self._read_events(), name="l2-netlink-events")
        try:
            while True:
                await self._stale.wait()
                await asyncio.sleep(self._settle)
                self._stale.clear()
                try:
                    await self.refresh()
                except AnnounceError as err:
                    log.warning("interfaces_read_failed error=%s cause=%s", err, err.__cause__)
                    self._stale.set()
                    await asyncio.sleep(RETRY_AFTER)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_events(self) -> None:
        """Mark the view stale on each event; subscribe again if the socket fails (one that
        overflowed stays broken) and read again, since events were lost."""
        while True:
            try:
                while await self._next_batch():
                    self._stale.set()
            except OSError as err:
                log.warning("netlink_events_failed error=%s", err)
            self._monitor.close()
            self._monitor = None
            self._stale.set()
            while self._monitor is None:
                await asyncio.sleep(RETRY_AFTER)
                try:
                    self._monitor = await self._subscribe()
                except AnnounceError as err:
                    log.warning("netlink_subscribe_failed error=%s cause=%s", err, err.__cause__)

    async def _next_batch(self) -> int:
        """How many messages the next batch held; 0 when the socket was closed or lost."""
        return len([msg async for msg in self._monitor.get()])  # one batch per get()

    async def _subscribe(self) -> Any:
        monitor = self._open()
        try:
            await monitor.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        except OSError as err:
            monitor.close()
            raise AnnounceError("subscribing to netlink link and address events") from err
        return monitor
