"""The speaker's data plane: liveness probes and the L2 announcer on one event loop in a thread
of its own, so API lists and JSON parsing on the control loop never delay an ARP answer or a
probe ack (a hung data plane fails its probes, which is the point). Fed by speaker.agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from lbctl.core.liveness import (
    CHECK_TRIES,
    CHECK_WAIT,
    PROBE_INTERVAL,
    STALL,
    Group,
    Liveness,
    Report,
    Verdict,
)
from lbctl.core.model import IPAddress, NodeName
from speaker.announcers.layer2.errors import AnnounceError
from speaker.probes import Endpoint, Kind, Message, Reports, WireError

log = logging.getLogger("lbctl.speaker")
LEAVE_WAIT = 0.2  # s a leaving speaker waits for its monitors' GARPs (issue 9: <= 200 ms)
# s between ARP/NS probes of each VIP this node announces: an answer from a MAC that is no
# speaker's is a DuplicateResponder (a stray static entry, kube-proxy IPVS without strictARP).
DUPLICATE_CHECK_EVERY = 5.0
START_TIMEOUT = 10.0
# VIPs ARP-probed per suspect owner: any answer proves its responder alive, so a few suffice; a
# node owning 300 groups would otherwise cost 300 probes and tasks per suspicion, on a loop that
# is likely already behind (a saturated machine is when suspicions come).
ARP_CHECKS_PER_OWNER = 3
LOG_GROUPS = 10  # groups named per ownership log line burst; the rest are counted


def _on_phase(after: float) -> float:
    """The first monotonic instant at or after `after` that is a multiple of PROBE_INTERVAL
    on the wall clock."""
    wall = after + (time.time() - time.monotonic())
    return after + (-wall) % PROBE_INTERVAL


class Answered(Protocol):
    @property
    def answered(self) -> bool: ...

    @property
    def answered_by(self) -> frozenset[str]: ...


class Announcer(Protocol):
    """The L2 announcer as the data plane uses it (speaker.announcers.layer2)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def sync(self, desired: Mapping[IPAddress, str]) -> None: ...

    def interface_for(self, ip: IPAddress, allowed: tuple[str, ...]) -> str | None: ...

    def macs(self) -> tuple[str, ...]: ...

    def discard_pending(self) -> int: ...

    async def probe(
        self, vip: IPAddress, interface: str | None = None, *, window: float = ...
    ) -> Answered: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """What the control loop hands over: groups, the interfaces each may use, peers' addresses,
    and whether the API view is fresh."""

    groups: tuple[Group, ...]
    interfaces: Mapping[IPAddress, tuple[str, ...]]  # group key -> allowed interfaces (or all)
    addresses: Mapping[NodeName, IPAddress]  # node -> InternalIP, where its speaker listens


@dataclass(frozen=True, slots=True)
class Held:
    """One group this node announces, for the condition writer and metrics."""

    key: IPAddress
    ips: tuple[IPAddress, ...]
    interface: str
    verdict: Verdict


class DataPlane:
    """Owns the Liveness state and the announcer; every method but the thread-safe ones at the
    top runs on its own loop."""

    def __init__(
        self,
        me: NodeName,
        announcer: Announcer,
        *,
        bind: tuple[str, int],
        on_change: Callable[[dict[IPAddress, Held]], None] = lambda _: None,
        on_foreign: Callable[[IPAddress, str, str], None] = lambda *_: None,
    ) -> None:
        self.me = me
        self.announcer = announcer
        self.bind = bind
        self.on_change = on_change
        self.on_foreign = on_foreign
        self.liveness = Liveness(me, time.monotonic())
        self.plan = Plan((), {}, {})
        self._group_of: dict[IPAddress, Group] = {}  # every IP of the plan -> its group
        self.fresh = False
        self.endpoint: Endpoint | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._seq = 0
        # indirect probes: seq -> (the asker's address, the asker, the target)
        self._relays: dict[int, tuple[tuple[str, int], NodeName, NodeName]] = {}
        self._held: dict[IPAddress, Held] = {}
        self.ownership_changes = 0
        self.speaker_macs: dict[str, NodeName] = {}  # every MAC a peer's report listed
        self.peer_fresh: dict[NodeName, bool] = {}
        self._taken_from_me: set[IPAddress] = set()  # while leaving: groups others announce
        self._applied: tuple[dict[IPAddress, int], bool] | None = None
        self.reports = Reports()
        self._dead: frozenset[NodeName] = frozenset()  # peers last logged dead
        self._isolated = False  # last logged
        self._ticked = time.monotonic()  # when the last tick ended (awake)

    # -- thread-safe API (control loop) --------------------------------------------------------

    def start(self) -> None:
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="dataplane")
        self._thread.daemon = True
        self._thread.start()
        ready.result(START_TIMEOUT)

    def update(self, plan: Plan) -> None:
        self._call(self._update, plan)

    def set_fresh(self, fresh: bool) -> None:
        self._call(self._set_fresh, fresh)

    def api_answered(self, at: float) -> None:
        """The API answered a probe at `at` (monotonic): this node is not isolated."""
        self._call(self.liveness.api_ok, at)

    def stop(self, *, graceful: bool) -> None:
        """Leave (tell the monitors, wait for their takeover) when graceful, then stop."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(graceful), loop).result(5.0)
        thread.join(5.0)

    def awake(self) -> bool:
        """Whether this loop ticked within STALL (data-plane loop). False after a stall until
        the tick that handles it: the announcer then answers no queued frame and sends no
        burst frame planned before the stall (Layer2Hooks.awake)."""
        return time.monotonic() - self._ticked <= STALL

    def cannot_carry(self) -> frozenset[IPAddress]:
        """Group keys this node has no interface for (a snapshot; any thread)."""
        return self.liveness.cannot

    def someone_else_holds(self, key: IPAddress) -> bool:
        """Whether another speaker said it holds `key` recently (a snapshot; any thread)."""
        holder = self.liveness.holders.get(key)
        heard = self.liveness.heard.get(holder.node, -1e9) if holder is not None else -1e9
        return holder is not None and holder.node != self.me and heard > time.monotonic() - 3

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    # -- the loop ----------------------------------------------------------------------------

    def _main(self, ready: Future[None]) -> None:
        try:
            asyncio.run(self._run(ready))
        except BaseException as err:
            log.exception("dataplane_crashed")
            if not ready.done():
                ready.set_exception(err)

    async def _run(self, ready: Future[None]) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        endpoint = Endpoint(self._on_message)
        endpoint.open(self.loop, self.bind)
        self.endpoint = endpoint
        await self.announcer.start()
        self._ticked = time.monotonic()
        ready.set_result(None)
        checks = asyncio.create_task(self._duplicate_checks())
        self._ticking = asyncio.create_task(self._ticks())
        try:
            await asyncio.wait({self._ticking})  # ends when _shutdown cancels it
            if not self._ticking.cancelled():
                self._ticking.result()  # a crash of the ticks: dataplane_crashed, in _main
        finally:
            checks.cancel()
            await asyncio.gather(checks, return_exceptions=True)
            await self.announcer.stop()
            endpoint.close(self.loop)

    async def _ticks(self) -> None:
        """Every PROBE_INTERVAL: measure this loop's lag, tick the liveness state, send.

        Ticks fall on multiples of PROBE_INTERVAL of the wall clock, the same instants on every
        speaker (NTP keeps nodes within milliseconds), so the probes a node receives, and the
        acks to its own, come in bursts that one wakeup of this loop reads (Endpoint). Ticking
        at random phases costs a wakeup per datagram, and on the 2-core VM a wakeup of an
        asyncio loop costs more CPU than the datagram (docs/performance.md, "L2 speaker").
        The liveness state is ticked at the scheduled instant, so its probes stay exactly one
        interval apart whatever the timer's jitter; lag is measured against it."""
        assert self._stop is not None
        expected = _on_phase(time.monotonic() + PROBE_INTERVAL / 2)
        while not self._stop.is_set():
            # a plain sleep (_shutdown cancels this task): a wait_for on the stop event built
            # a task and a timeout every tick
            await asyncio.sleep(max(0.0, expected - time.monotonic()))
            now = time.monotonic()
            lag = max(0.0, now - expected)
            if lag > STALL:  # requests queued during the stall are stale: answer none of them
                dropped = self.announcer.discard_pending()
                log.warning("loop_stalled seconds=%.2f frames_dropped=%d", lag, dropped)
            self.liveness.on_lag(lag, now)
            self._act(self.liveness.tick(expected if lag < PROBE_INTERVAL else now))
            self._apply()
            self._log_peers(now)
            self._ticked = time.monotonic()
            expected = _on_phase(max(now, expected) + PROBE_INTERVAL / 2)

    def _update(self, plan: Plan) -> None:
        self.plan = plan
        self._group_of = {ip: g for g in plan.groups for ip in g.ips}
        now = time.monotonic()
        self.liveness.set_groups(plan.groups, now)
        self._check_carry(now)
        self.reports.forget(plan.addresses)
        self._apply(force=True)

    def interfaces_changed(self) -> None:
        """The announcer's interface view changed (data-plane loop): a group this node could
        not carry may be carried now, and the other way round. Without this, a link that
        comes back would wait for the next plan, which may never come in a quiet cluster."""
        self._check_carry(time.monotonic())
        self._apply(force=True)

    def _check_carry(self, now: float) -> None:
        cannot = frozenset(
            g.key for g in self.plan.groups if self.me in g.ranking and self._interface(g) is None
        )
        if cannot != self.liveness.cannot:
            self.liveness.set_cannot_carry(cannot, now)

    def _set_fresh(self, fresh: bool) -> None:
        self.fresh = fresh

    def _interface(self, group: Group) -> str | None:
        allowed = tuple(self.plan.interfaces.get(group.key, ()))
        return self.announcer.interface_for(group.key, allowed)

    def _apply(self, *, force: bool = False) -> None:
        """Hand the announcer what this node holds now; tell the control loop of changes.
        Cheap when nothing changed (it runs after every message and tick)."""
        snapshot = (dict(self.liveness.held), self.liveness.leaving)
        if not force and snapshot == self._applied:
            return
        self._applied = snapshot
        held: dict[IPAddress, Held] = {}
        for key, group in self.liveness.holding().items():
            iface = self._interface(group)
            if iface is not None:
                verdict = self.liveness.verdicts.get(key, Verdict.OWNER)
                held[key] = Held(key, group.ips, iface, verdict)
        if held.keys() != self._held.keys():
            self.ownership_changes += len(held.keys() ^ self._held.keys())
            self._log_ownership(held)
        changed = held != self._held
        self._held = held
        self.announcer.sync({ip: h.interface for h in held.values() for ip in h.ips})
        if changed:
            self.on_change(dict(held))

    def _log_ownership(self, held: Mapping[IPAddress, Held]) -> None:
        """One line per group taken or dropped (the first LOG_GROUPS of each, then a count)."""
        gained = sorted(held.keys() - self._held.keys(), key=str)
        lost = sorted(self._held.keys() - held.keys(), key=str)
        for what, keys in (("taken", gained), ("dropped", lost)):
            for key in keys[:LOG_GROUPS]:
                verdict = self.liveness.verdicts.get(key)
                log.info("group_%s key=%s verdict=%s", what, key, verdict and verdict.value)
            if len(keys) > LOG_GROUPS:
                log.info("group_%s more=%d", what, len(keys) - LOG_GROUPS)

    def _log_peers(self, now: float) -> None:
        """Peers declared dead or alive again, and isolation starting or ending (per tick: a
        few peers, no group is visited)."""
        dead = frozenset(n for n, p in self.liveness.peers.items() if p.dead)
        for node in sorted(dead - self._dead):
            log.info("peer_dead node=%s", node)
        for node in sorted(self._dead - dead):
            log.info("peer_alive node=%s", node)
        self._dead = dead
        isolated = self.liveness.isolated(now)
        if isolated != self._isolated:
            log.warning("isolated" if isolated else "isolation_ended")
            self._isolated = isolated

    # -- messages ----------------------------------------------------------------------------

    def _my_report(self) -> None:
        """Make this node's report current: a new version only when what it says changed
        (checked per message; steady state compares a few fields and a dict)."""
        lv, mine, macs = self.liveness, self.reports.mine, self.announcer.macs()
        if (
            mine is not None
            and mine.fresh == self.fresh
            and mine.leaving == lv.leaving
            and mine.cannot == lv.cannot
            and mine.macs == macs
            and mine.holding == lv.held
        ):
            return
        self.reports.set_mine(lv.report(self.fresh, macs))

    def _message(self, kind: Kind, seq: int, to: NodeName | None, **extra: object) -> Message:
        """A message to `to` carrying this node's report only if `to` lacks it."""
        self._my_report()
        report_id, seen, body = self.reports.to(to)
        report = self.reports.mine if body is not None else None
        return Message(kind, seq, self.me, report_id, seen, report, **extra)  # type: ignore[arg-type]

    def _out(self, msg: Message, addr: tuple[str, int]) -> None:
        if self.endpoint is not None:
            body = self.reports.mine_body if msg.report is not None else None
            self.endpoint.send(msg, addr, body)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % (1 << 31)
        return self._seq

    def _send(self, kind: Kind, node: NodeName, **extra: object) -> int | None:
        addr = self.plan.addresses.get(node)
        if addr is None or self.endpoint is None:
            return None
        seq = self._next_seq()
        self._out(self._message(kind, seq, node, **extra), (str(addr), self.bind[1]))
        return seq

    def _act(self, actions: object) -> None:
        from lbctl.core.liveness import Actions

        assert isinstance(actions, Actions)
        for node in actions.probes:
            self._send(Kind.PROBE, node)
        if actions.indirect:
            asyncio.get_running_loop().create_task(self._indirect(actions.indirect))
        checks: dict[NodeName, int] = {}
        for ip in actions.arp_probes:
            owner = self._owner_of(ip)
            if owner is None or checks.get(owner, 0) >= ARP_CHECKS_PER_OWNER:
                continue
            checks[owner] = checks.get(owner, 0) + 1
            asyncio.get_running_loop().create_task(self._arp_check(ip, owner))
        for node, keys in actions.handbacks:
            self._send(Kind.HANDBACK, node, keys=keys)

    async def _duplicate_checks(self) -> None:
        while True:
            await asyncio.sleep(DUPLICATE_CHECK_EVERY)
            for held in list(self._held.values()):
                for ip in held.ips:
                    try:
                        result = await self.announcer.probe(ip, held.interface)
                    except AnnounceError as err:
                        log.debug("duplicate_check_failed ip=%s error=%s", ip, err)
                        continue
                    for mac in sorted(result.answered_by):
                        self.conflict(ip, str(mac), held.interface)

    async def _indirect(self, asks: tuple[tuple[NodeName, NodeName], ...]) -> None:
        """Ask the other monitors to probe a suspect, CHECK_TRIES times over the check window,
        until one answer clears it."""
        for attempt in range(CHECK_TRIES):
            if attempt:
                await asyncio.sleep(CHECK_WAIT / CHECK_TRIES)
            for helper, target in asks:
                peer = self.liveness.peers.get(target)
                if peer is None or peer.suspect_since is None:
                    continue
                self._send(
                    Kind.INDIRECT, helper, target=target, addr=self.plan.addresses.get(target)
                )

    def _owner_of(self, ip: IPAddress) -> NodeName | None:
        group = self._group_of.get(ip)
        return group.ranking[0] if group is not None and group.ranking else None

    async def _arp_check(self, ip: IPAddress, owner: NodeName) -> None:
        """ARP-probe (or NS-probe) a VIP whose owner looks dead: any answer cancels the
        takeover."""
        try:
            result = await self.announcer.probe(ip, window=CHECK_WAIT * 0.75)
        except AnnounceError as err:
            log.debug("arp_probe_failed ip=%s error=%s", ip, err)
            return
        if result.answered:
            self.liveness.on_check(owner, time.monotonic())
            self._apply()

    def _on_message(self, msg: Message, src: tuple[str, int]) -> None:
        now = time.monotonic()
        try:
            report = self.reports.received(msg)
        except WireError:
            report = None  # counted as a miss; the next message carries the report again
        if report is not None:  # None: a version this node lacks (it restarted); the next has it
            self._learn(report)
        if msg.kind is Kind.PROBE:
            if report is not None:
                self.liveness.on_report(report, now, ack=False)
            self._out(self._message(Kind.ACK, msg.seq, msg.node), src)
        elif msg.kind is Kind.ACK:
            if report is not None:
                self.liveness.on_report(report, now, ack=True)
            relay = self._relays.pop(msg.seq, None)
            if relay is not None:
                asker, ask_node, target = relay
                self._out(
                    self._message(Kind.INDIRECT_RESULT, msg.seq, ask_node, target=target, ok=True),
                    asker,
                )
        elif msg.kind is Kind.INDIRECT and msg.target is not None:
            self._relay(msg, src)
        elif msg.kind is Kind.INDIRECT_RESULT and msg.ok and msg.target is not None:
            self.liveness.on_check(msg.target, now)
        elif msg.kind is Kind.HANDBACK:
            self.liveness.on_handback(msg.keys, now)
        self._apply()

    def _learn(self, report: Report) -> None:
        """What a peer's report tells beyond liveness: its MACs, its API view, and, while this
        node leaves, which of its groups the peer took."""
        sender = report.node
        for mac in report.macs:
            self.speaker_macs[mac.lower()] = sender
        self.peer_fresh[sender] = report.fresh
        if self.liveness.leaving:
            self._taken_from_me.update(report.holding)

    def _relay(self, msg: Message, src: tuple[str, int]) -> None:
        """Probe `msg.target` for another monitor; its ack is forwarded as the result."""
        if msg.addr is None or self.endpoint is None or msg.target is None:
            return
        seq = self._next_seq()
        if len(self._relays) > 1024:  # answers that never came
            self._relays.clear()
        self._relays[seq] = (src, msg.node, msg.target)
        probe = self._message(Kind.PROBE, seq, msg.target)
        self._out(probe, (str(msg.addr), self.bind[1]))

    def conflict(self, ip: IPAddress, mac: str, iface: str) -> None:
        """The announcer saw `mac` answer for `ip`, which this node holds (data-plane loop)."""
        group = self._group_of.get(ip)
        peer = self._speaker_of(mac)
        if group is None:
            return
        if peer is None:
            self.on_foreign(ip, mac, iface)
            return
        fresh = self.peer_fresh.get(peer, False)
        if self.liveness.on_conflict(group.key, peer, fresh, self.fresh):
            log.info("yield_vip ip=%s to=%s", ip, peer)
            self._apply()

    def _speaker_of(self, mac: str) -> NodeName | None:
        return self.speaker_macs.get(mac.lower())

    async def _shutdown(self, graceful: bool) -> None:
        assert self._stop is not None
        if graceful:
            held = set(self.liveness.held)
            for node in self.liveness.leave():
                self._send(Kind.PROBE, node)
            deadline = time.monotonic() + LEAVE_WAIT
            while time.monotonic() < deadline and not held <= self._taken_from_me:
                await asyncio.sleep(0.01)
        self.liveness.release_all()
        self._apply()
        self._stop.set()
        if self._ticking is not None:
            self._ticking.cancel()
