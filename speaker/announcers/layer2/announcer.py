"""The layer-2 announcer: holds VIPs on interfaces, announces each new one in a burst, answers
ARP/NDP only for the VIPs it holds and only on their interfaces, and probes who holds a VIP;
driven by the speaker's data plane through sync(desired)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
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
SLICE = 100  # VIPs settled (group joined or left, first frame sent) per loop turn: ~10 ms
LOG_VIPS = 10  # VIPs named per l2_holding / l2_released burst of lines; the rest are counted


@dataclass
class _Port:
    """One interface in use: its socket, the VIPs held on it, the probes reading it."""

    socket: FrameSocket
    vips: set[IPAddress] = field(default_factory=set)
    probes: dict[IPAddress, list[set[MacAddress]]] = field(default_factory=dict)
    # IPv6 VIPs whose solicited-node group is joined on this socket: left one slice at a time
    # before the socket closes (closing it leaves them all at once, ~100 us each in the kernel)
    joined: set[IPAddress] = field(default_factory=set)

    @property
    def link(self) -> Link:
        return self.socket.link

    @property
    def idle(self) -> bool:
        return not self.vips and not self.probes and not self.joined


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
        self._bursts: dict[IPAddress, asyncio.Task[None]] = {}  # each held VIP's burst wave
        # the queued per-VIP work (_drain): VIPs to settle, newly held ones still to announce,
        # and the port each IPv6 VIP's solicited-node group is joined on
        self._work: collections.deque[IPAddress] = collections.deque()
        self._queued: set[IPAddress] = set()
        self._fresh: set[IPAddress] = set()
        self._joined: dict[IPAddress, _Port] = {}
        self._draining: asyncio.Handle | None = None
        self.interfaces.subscribe(self._on_interfaces)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop; read the interfaces if the view is this announcer's own."""
        self._loop = asyncio.get_running_loop()
        if self._own_view is not None:
            await self._own_view.start()

    async def stop(self) -> None:
        """Stop answering and announcing at once, and close every socket."""
        tasks = set(self._bursts.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        self._work.clear()
        self._queued.clear()
        self._fresh.clear()
        self._joined.clear()  # the sockets close below, and their memberships with them
        self._desired.clear()
        self._held.clear()
        self._unheld.clear()
        for port in self._ports.values():
            port.vips.clear()
            port.probes.clear()
            port.joined.clear()
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

    @property
    def settling(self) -> int:
        """How many VIPs still have queued work (a group to join or leave, a first frame)."""
        return len(self._work)

    # -- the verb ------------------------------------------------------------------------------

    def sync(self, desired: Desired) -> None:
        """Hold exactly `desired`: stop answering for released VIPs at once; open sockets and
        start a burst for new ones (a VIP that moved interface counts as both)."""
        self._running_loop()
        self._desired = dict(desired)
        self._apply()

    def update(self, changes: Mapping[IPAddress, str | None]) -> None:
        """sync() for the VIPs in `changes` alone (None: no longer desired): a change of a few
        VIPs costs those, not every VIP held (the data plane's path; sync() is for whole
        states)."""
        self._running_loop()
        for vip, name in changes.items():
            if name is None:
                self._desired.pop(vip, None)
            else:
                self._desired[vip] = name
        self._apply(changes.keys())

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

    def _resolve(self, vips: Iterable[IPAddress] | None) -> dict[IPAddress, Link | None]:
        """Each of `vips` (None: every desired or held VIP) -> the link to hold it on, or None
        (not desired, or in _unheld with the reason its interface cannot carry it)."""
        by_name = {i.name: i for i in self.interfaces.interfaces}
        if vips is None:
            self._unheld = {}
            vips = self._desired.keys() | self._held.keys()
        links: dict[IPAddress, Link | None] = {}
        for vip in vips:
            self._unheld.pop(vip, None)
            name = self._desired.get(vip)
            interface = by_name.get(name) if name is not None else None
            links[vip] = None
            if name is None:
                continue
            if interface is None:
                self._unheld[vip] = HoldFailure.INTERFACE_MISSING
            elif not interface.up:
                self._unheld[vip] = HoldFailure.INTERFACE_DOWN
            else:
                links[vip] = interface.link
        return links

    def _apply(self, vips: Iterable[IPAddress] | None = None) -> None:
        """Diff what is desired against what is held, for `vips` (None: all). What is answered
        for changes at once, for every VIP; the per-VIP kernel and wire work (a solicited-node
        group joined or left, a burst's first frame) is queued and done SLICE VIPs per loop
        turn (_drain), the first slice before this returns. Taking or dropping 10,000 VIPs
        costs ~1-2 s of that work (the kernel's group join ~60 us, leave ~100 us): in one go it
        stalled the loop past STALL, and a stalled speaker drops all it holds
        (docs/performance.md)."""
        links = self._resolve(vips)
        released = [v for v, link in links.items() if v in self._held and self._held[v] != link]
        for vip in released:
            self._release(vip)
        taken: list[IPAddress] = []
        for vip, link in links.items():
            if link is not None and vip not in self._held:
                try:
                    self._hold(vip, link)
                except AnnounceError as err:
                    self._hold_failed(vip, link, err)
                else:
                    taken.append(vip)
        self._log_vips("l2_released", released)
        self._log_vips("l2_holding", taken)
        self._close_idle_ports()
        self._drain()

    def _hold(self, vip: IPAddress, link: Link) -> None:
        port = self._ports.get(link) or self._open_port(link)
        port.vips.add(vip)
        self._held[vip] = link
        self._fresh.add(vip)
        self._enqueue(vip)

    def _release(self, vip: IPAddress) -> None:
        self._unhold(vip)
        self._enqueue(vip)

    def _unhold(self, vip: IPAddress) -> None:
        link = self._held.pop(vip)
        self._bursts.pop(vip, None)  # its wave skips it from now on
        self._fresh.discard(vip)
        self._ports[link].vips.discard(vip)

    def _hold_failed(self, vip: IPAddress, link: Link, err: AnnounceError) -> None:
        log.warning(
            "l2_hold_failed vip=%s interface=%s error=%s cause=%s",
            vip, link.name, err, err.__cause__,
        )  # fmt: skip
        self._unheld[vip] = HoldFailure.SOCKET_FAILED

    def _log_vips(self, what: str, vips: list[IPAddress]) -> None:
        """One line per VIP for the first LOG_VIPS of a change, then a count."""
        for vip in vips[:LOG_VIPS]:
            link = self._held.get(vip)
            log.info("%s vip=%s interface=%s", what, vip, link.name if link else "-")
        if len(vips) > LOG_VIPS:
            log.info("%s more=%d", what, len(vips) - LOG_VIPS)

    # -- the queued per-VIP work ---------------------------------------------------------------

    def _enqueue(self, vip: IPAddress) -> None:
        if vip not in self._queued:
            self._queued.add(vip)
            self._work.append(vip)

    def _drain(self) -> None:
        """Settle up to SLICE queued VIPs; the rest on the next loop turn (after the frames and
        timers ready by then: probes and acks go on while a large change is worked through)."""
        wave: list[IPAddress] = []
        for _ in range(min(SLICE, len(self._work))):
            vip = self._work.popleft()
            self._queued.discard(vip)
            if self._settle(vip):
                wave.append(vip)
        if wave:
            self._start_wave(wave)
        self._close_idle_ports()  # a port whose last group was just left
        if self._work and self._draining is None and self._loop is not None:
            self._draining = self._loop.call_soon(self._drain_later)

    def _drain_later(self) -> None:
        self._draining = None
        self._drain()

    def _settle(self, vip: IPAddress) -> bool:
        """Bring one VIP's group membership to where it is held now (none when released) and
        send the first frame of a new holding; True when a burst starts."""
        link = self._held.get(vip)
        port = self._ports.get(link) if link is not None else None
        if isinstance(vip, IPv6Address) and self._joined.get(vip) is not port:
            joined = self._joined.pop(vip, None)
            if joined is not None and self._ports.get(joined.link) is joined:  # still open
                joined.joined.discard(vip)
                try:
                    joined.socket.leave(vip)
                except AnnounceError as err:
                    log.warning("l2_leave_failed vip=%s error=%s cause=%s", vip, err, err.__cause__)
            if port is not None and link is not None:
                try:
                    port.socket.join(vip)
                except AnnounceError as err:
                    self._unhold(vip)  # nothing joined: nothing left to settle
                    self._hold_failed(vip, link, err)
                    return False
                self._joined[vip] = port
                port.joined.add(vip)
        if port is None or vip not in self._fresh:
            return False
        self._fresh.discard(vip)
        self._announce(vip)
        return True

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
        self._fresh.discard(vip)
        self._announce(vip)
        self._start_wave([vip])

    def _start_wave(self, vips: list[IPAddress]) -> None:
        """The rest of the bursts of `vips`, whose first frame just went out: one task for them
        all, which skips a VIP released or re-announced since (_bursts names its wave)."""
        if self._burst_count <= 1:
            return
        loop = self._running_loop()
        task = loop.create_task(self._repeat(vips, loop.time()), name="l2-burst")
        for vip in vips:
            self._bursts[vip] = task
        task.add_done_callback(lambda done: self._wave_done(vips, done))

    def _wave_done(self, vips: list[IPAddress], task: asyncio.Task[None]) -> None:
        for vip in vips:
            if self._bursts.get(vip) is task:
                del self._bursts[vip]

    async def _repeat(self, vips: list[IPAddress], first: float) -> None:
        loop = self._running_loop()
        me = asyncio.current_task()
        for n in range(1, self._burst_count):
            # Scheduled from the first frame, so a slow send does not stretch the burst.
            await asyncio.sleep(max(0.0, first + n * self._burst_interval - loop.time()))
            sent = 0
            for vip in vips:
                if self._bursts.get(vip) is me:
                    self._announce(vip)
                    sent += 1
                    if sent % SLICE == 0:
                        await asyncio.sleep(0)  # a large wave: other work between slices
            if not sent:
                return

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
