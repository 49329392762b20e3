"""The layer-2 announcer: holds VIPs on interfaces, announces each new one in a burst, answers
ARP/NDP only for the VIPs it holds and only on their interfaces, and probes who holds a VIP;
driven by the speaker's data plane through sync(desired)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from types import MappingProxyType

from speaker.announcers.layer2 import frames
from speaker.announcers.layer2.api import (
    BURST_INTERVAL,
    BURST_SPAN,
    PROBE_ATTEMPTS,
    PROBE_WINDOW,
    Desired,
    HoldFailure,
    Layer2Hooks,
    ProbeResult,
)
from speaker.announcers.layer2.errors import AnnounceError
from speaker.announcers.layer2.frames import Claim, MacAddress, Request
from speaker.announcers.layer2.interfaces import (
    Interface,
    InterfaceSource,
    IPAddress,
    Link,
    interface_for,
)
from speaker.announcers.layer2.netlink import InterfaceView
from speaker.announcers.layer2.sockets import (
    FrameSocket,
    NamespaceRunner,
    PacketSocket,
    current_namespace,
)

log = logging.getLogger("lbctl.speaker.layer2")


@dataclass
class _Port:
    """One interface in use: its socket, the VIPs held on it, the probes reading it."""

    socket: FrameSocket
    vips: set[IPAddress] = field(default_factory=set)
    probes: dict[IPAddress, list[set[MacAddress]]] = field(default_factory=dict)

    @property
    def link(self) -> Link:
        return self.socket.link

    @property
    def idle(self) -> bool:
        return not self.vips and not self.probes


class Layer2Announcer:
    """ARP/NDP for the VIPs this node holds, on one asyncio loop, with no threads.

    `sync(desired)` is the one verb: the announcer keeps `desired`, resolves each interface name
    through its interface view (again whenever the view changes: a re-created link or a new MAC
    is announced again), and diffs against what it holds. Sockets, one per interface, are open
    while the interface carries a VIP or a running probe.
    """

    def __init__(
        self,
        hooks: Layer2Hooks | None = None,
        *,
        interfaces: InterfaceSource | None = None,
        in_netns: NamespaceRunner = current_namespace,
        open_socket: Callable[[Link], FrameSocket] | None = None,
        burst_interval: float = BURST_INTERVAL,
        burst_span: float = BURST_SPAN,
    ) -> None:
        self.hooks = hooks or Layer2Hooks()  # may be replaced before start()
        self._own_view: InterfaceView | None = None  # started and stopped with the announcer
        if interfaces is None:
            self._own_view = interfaces = InterfaceView(in_netns=in_netns)
        self.interfaces = interfaces
        self._open_socket = open_socket or (lambda link: PacketSocket.open(link, in_netns))
        self._burst_interval = burst_interval
        self._burst_count = 1 + math.floor(burst_span / burst_interval + 1e-9)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._desired: dict[IPAddress, str] = {}
        self._held: dict[IPAddress, Link] = {}
        self._unheld: dict[IPAddress, HoldFailure] = {}
        self._ports: dict[Link, _Port] = {}
        self._bursts: dict[IPAddress, asyncio.Task[None]] = {}
        self.interfaces.subscribe(self._on_interfaces)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop; read the interfaces if the view is this announcer's own."""
        self._loop = asyncio.get_running_loop()
        if self._own_view is not None:
            await self._own_view.start()

    async def stop(self) -> None:
        """Stop answering and announcing at once, and close every socket."""
        tasks = list(self._bursts.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._desired.clear()
        self._held.clear()
        self._unheld.clear()
        for port in self._ports.values():
            port.vips.clear()
            port.probes.clear()
        self._close_idle_ports()
        if self._own_view is not None:
            await self._own_view.stop()
        self._loop = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("Layer2Announcer used before start() or after stop()")
        return self._loop

    # -- what the speaker asks -----------------------------------------------------------------

    def interface_for(self, vip: IPAddress, allowed: Sequence[str] = ()) -> str | None:
        """The name of the interface to hold `vip` on (interfaces.interface_for), or None: the
        speaker's NoInterfaceForIP."""
        chosen = interface_for(vip, self.interfaces.interfaces, allowed)
        return None if chosen is None else chosen.name

    def macs(self) -> tuple[str, ...]:
        """This node's MACs on its up layer-2 interfaces (a speaker's acks carry them)."""
        return tuple(sorted({i.link.mac for i in self.interfaces.interfaces if i.up}))

    @property
    def held(self) -> Mapping[IPAddress, Link]:
        """The VIPs answered for now, and where."""
        return MappingProxyType(self._held)

    @property
    def unheld(self) -> Mapping[IPAddress, HoldFailure]:
        """Desired VIPs not answered for, and why; retried on each sync and interface change."""
        return MappingProxyType(self._unheld)

    # -- the verb ------------------------------------------------------------------------------

    def sync(self, desired: Desired) -> None:
        """Hold exactly `desired`: stop answering for released VIPs at once; open sockets and
        start a burst for new ones (a VIP that moved interface counts as both)."""
        self._running_loop()
        self._desired = dict(desired)
        self._apply()

    def reannounce(self, vip: IPAddress) -> None:
        """Start a fresh burst for a held VIP (a conflict's winner repairs the clients the
        other speaker's frames flipped)."""
        if vip not in self._held:
            raise KeyError(f"{vip} is not held here")
        self._start_burst(vip)

    def _on_interfaces(self, _: tuple[Interface, ...]) -> None:
        if self._loop is not None:
            self._apply()
            self.hooks.on_interfaces()

    def _resolve(self) -> dict[IPAddress, Link]:
        """Desired VIPs on interfaces that can carry them; the rest go to _unheld."""
        by_name = {i.name: i for i in self.interfaces.interfaces}
        self._unheld = {}
        links: dict[IPAddress, Link] = {}
        for vip, name in self._desired.items():
            interface = by_name.get(name)
            if interface is None:
                self._unheld[vip] = HoldFailure.INTERFACE_MISSING
            elif not interface.up:
                self._unheld[vip] = HoldFailure.INTERFACE_DOWN
            else:
                links[vip] = interface.link
        return links

    def _apply(self) -> None:
        links = self._resolve()
        for vip, link in list(self._held.items()):
            if links.get(vip) != link:
                self._release(vip)
        for vip, link in links.items():
            if vip not in self._held:
                try:
                    self._hold(vip, link)
                except AnnounceError as err:
                    log.warning(
                        "l2_hold_failed vip=%s interface=%s error=%s cause=%s",
                        vip, link.name, err, err.__cause__,
                    )  # fmt: skip
                    self._unheld[vip] = HoldFailure.SOCKET_FAILED
        self._close_idle_ports()

    def _hold(self, vip: IPAddress, link: Link) -> None:
        port = self._ports.get(link) or self._open_port(link)
        if isinstance(vip, IPv6Address):
            port.socket.join(vip)
        port.vips.add(vip)
        self._held[vip] = link
        log.info("l2_holding vip=%s interface=%s mac=%s", vip, link.name, link.mac)
        self._start_burst(vip)

    def _release(self, vip: IPAddress) -> None:
        link = self._held.pop(vip)
        if (task := self._bursts.pop(vip, None)) is not None:
            task.cancel()
        port = self._ports[link]
        port.vips.discard(vip)
        log.info("l2_released vip=%s interface=%s", vip, link.name)
        if isinstance(vip, IPv6Address):
            try:
                port.socket.leave(vip)
            except AnnounceError as err:
                log.warning("l2_leave_failed vip=%s error=%s cause=%s", vip, err, err.__cause__)

    # -- sockets -------------------------------------------------------------------------------

    def _open_port(self, link: Link) -> _Port:
        port = _Port(self._open_socket(link))
        self._running_loop().add_reader(port.socket.fileno(), self._on_readable, port)
        self._ports[link] = port
        log.info("l2_socket_opened interface=%s index=%d", link.name, link.index)
        return port

    def _close_idle_ports(self) -> None:
        for link, port in list(self._ports.items()):
            if port.idle:
                if self._loop is not None:
                    self._loop.remove_reader(port.socket.fileno())
                port.socket.close()
                del self._ports[link]
                log.info("l2_socket_closed interface=%s", link.name)

    def discard_pending(self) -> int:
        """Drop every frame waiting in the sockets unanswered (after a loop stall, requests
        queued before it may be for VIPs another node holds by now); returns how many."""
        dropped = 0
        for port in self._ports.values():
            while batch := self._receive(port):
                dropped += len(batch)
        return dropped

    def _receive(self, port: _Port) -> list[bytes]:
        try:
            return port.socket.receive()
        except AnnounceError as err:
            log.warning("l2_receive_failed error=%s cause=%s", err, err.__cause__)
            return []

    # -- announcing ----------------------------------------------------------------------------

    def _start_burst(self, vip: IPAddress) -> None:
        if (old := self._bursts.pop(vip, None)) is not None:
            old.cancel()
        loop = self._running_loop()
        first = loop.time()
        self._announce(vip)
        if self._burst_count > 1:
            task = loop.create_task(self._repeat(vip, first), name=f"l2-burst-{vip}")
            self._bursts[vip] = task
            task.add_done_callback(lambda done: self._burst_done(vip, done))

    def _burst_done(self, vip: IPAddress, task: asyncio.Task[None]) -> None:
        if self._bursts.get(vip) is task:
            del self._bursts[vip]

    async def _repeat(self, vip: IPAddress, first: float) -> None:
        loop = self._running_loop()
        for n in range(1, self._burst_count):
            # Scheduled from the first frame, so a slow send does not stretch the burst.
            await asyncio.sleep(max(0.0, first + n * self._burst_interval - loop.time()))
            self._announce(vip)

    def _announce(self, vip: IPAddress) -> None:
        if not self.hooks.awake():
            log.debug("l2_announce_skipped vip=%s reason=stalled", vip)
            return
        port = self._ports[self._held[vip]]
        try:
            port.socket.send(frames.announcement(port.link.mac, vip))
        except AnnounceError as err:
            log.warning("l2_announce_failed vip=%s error=%s cause=%s", vip, err, err.__cause__)
            return
        log.debug("l2_announced vip=%s interface=%s", vip, port.link.name)
        self.hooks.on_announce(vip, port.link.name)

    # -- answering -----------------------------------------------------------------------------

    def _on_readable(self, port: _Port) -> None:
        batch = self._receive(port)
        if not self.hooks.awake():
            log.debug("l2_frames_dropped interface=%s count=%d reason=stalled", port.link.name,
                      len(batch))  # fmt: skip
            return
        for frame in batch:
            try:
                self._handle(port, frame)
            except Exception:  # the loop boundary: one bad frame or hook must not stop the rest
                log.exception("l2_frame_failed interface=%s", port.link.name)

    def _handle(self, port: _Port, frame: bytes) -> None:
        request = frames.parse_request(frame)
        if request is not None and request.target in self._held:
            self.hooks.on_request(request.target, port.link.name)
            if request.target in port.vips:  # only on the VIP's own interface
                self._answer(port, request)
        claim = frames.parse_claim(frame)
        if claim is not None and claim.mac != port.link.mac:
            self._note_claim(port, claim)

    def _answer(self, port: _Port, request: Request) -> None:
        try:
            port.socket.send(frames.reply(port.link.mac, request))
        except AnnounceError as err:
            log.warning("l2_answer_failed vip=%s error=%s", request.target, err)
            return
        self.hooks.on_answer(request.target, port.link.name)

    def _note_claim(self, port: _Port, claim: Claim) -> None:
        for seen in port.probes.get(claim.ip, ()):
            seen.add(claim.mac)
        if claim.ip in port.vips:
            log.info(
                "l2_foreign_claim vip=%s mac=%s interface=%s", claim.ip, claim.mac, port.link.name
            )
            self.hooks.on_foreign_claim(claim.ip, claim.mac, port.link.name)

    # -- probing -------------------------------------------------------------------------------

    async def probe(
        self,
        vip: IPAddress,
        interface: str | None = None,
        *,
        attempts: int = PROBE_ATTEMPTS,
        window: float = PROBE_WINDOW,
    ) -> ProbeResult:
        """Ask who holds `vip` without claiming it (an ARP probe from 0.0.0.0, or an NS from
        ::), `attempts` times spread over `window` seconds, on `interface` (default: the one
        interface_for chooses); collect every MAC that claims it until the window ends.
        Raises AnnounceError when there is no such interface or a probe cannot be sent."""
        link = self._probe_link(vip, interface)
        loop = self._running_loop()
        port = self._ports.get(link) or self._open_port(link)
        seen: set[MacAddress] = set()
        port.probes.setdefault(vip, []).append(seen)
        try:
            frame = frames.probe(link.mac, vip)
            start = loop.time()
            for n in range(attempts):
                await asyncio.sleep(max(0.0, start + n * window / attempts - loop.time()))
                port.socket.send(frame)
            await asyncio.sleep(max(0.0, start + window - loop.time()))
        finally:
            # By identity: another probe's set may be equal. stop() may have cleared them all.
            others = [c for c in port.probes.pop(vip, []) if c is not seen]
            if others:
                port.probes[vip] = others
            self._close_idle_ports()
        log.debug("l2_probed vip=%s interface=%s answered_by=%s", vip, link.name, sorted(seen))
        return ProbeResult(vip, link.name, frozenset(seen))

    def _probe_link(self, vip: IPAddress, interface: str | None) -> Link:
        name = interface or self.interface_for(vip)
        found = next((i for i in self.interfaces.interfaces if i.name == name and i.up), None)
        if found is None:
            raise AnnounceError(f"probing {vip}: no up interface {name or 'holds its subnet'}")
        return found.link
