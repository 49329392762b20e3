"""The speaker's data plane: liveness probes and the L2 announcer on one event loop in a thread
of its own, so API lists and JSON parsing on the control loop never delay an ARP answer or a
probe ack (a hung data plane fails its probes, which is the point). Fed by speaker.agent.

This module holds the thread, the ticks and the ownership (what the liveness state holds, handed
to the announcer and back to the control loop); the messages and ARP/NS checks are its base class
(speaker.dataplane_messages), the types it exchanges speaker.dataplane_types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from lbctl.core.liveness import Liveness
from lbctl.core.liveness_types import PROBE_INTERVAL, STALL, GroupView, Verdict
from lbctl.core.model import IPAddress, NodeName
from speaker.dataplane_messages import Messages
from speaker.dataplane_types import Announcer, Held, Plan
from speaker.probes import Kind
from speaker.probesocket import Endpoint

log = logging.getLogger("lbctl.speaker")
LEAVE_WAIT = 0.2  # s a leaving speaker waits for its monitors' GARPs (issue 9: <= 200 ms)
START_TIMEOUT = 10.0
LOG_GROUPS = 10  # groups named per ownership log line burst; the rest are counted


def _on_phase(after: float) -> float:
    """The first monotonic instant at or after `after` that is a multiple of PROBE_INTERVAL
    on the wall clock."""
    wall = after + (time.time() - time.monotonic())
    return after + (-wall) % PROBE_INTERVAL


class DataPlane(Messages):
    """Owns the Liveness state and the announcer; every method but the thread-safe ones at the
    top runs on its own loop."""

    def __init__(
        self,
        me: NodeName,
        announcer: Announcer,
        *,
        bind: tuple[str, int],
        on_change: Callable[[dict[IPAddress, Held], frozenset[IPAddress] | None], None] = (
            lambda *_: None
        ),
        on_foreign: Callable[[IPAddress, str, str], None] = lambda *_: None,
    ) -> None:
        super().__init__()
        self.me = me
        self.announcer = announcer
        self.bind = bind
        self.on_change = on_change
        self.on_foreign = on_foreign
        self.liveness = Liveness(me, time.monotonic())
        self.plan = Plan((), {}, {})
        self._group_of: dict[IPAddress, GroupView] = {}  # every IP of the plan -> its group
        self.fresh = self.liveness.fresh = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._held: dict[IPAddress, Held] = {}
        self._epochs: dict[IPAddress, int] = {}  # the epoch of each group in _held
        self._carry_changed = False  # the groups this node cannot carry changed since _apply
        self.ownership_changes = 0
        self._dead: frozenset[NodeName] = frozenset()  # peers last logged dead
        self._isolated = False  # last logged
        self._ticked = time.monotonic()  # when the last tick ended (awake)
        self._plan_lock = threading.Lock()
        self._next_plan: Plan | None = None  # handed over, not taken yet (update)
        self._taking = False  # a _take_plan is scheduled on the loop
        self._plan_ready_at = 0.0  # when the next plan may be taken (_take_plan)

    # -- thread-safe API (control loop) --------------------------------------------------------

    def start(self) -> None:
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="dataplane")
        self._thread.daemon = True
        self._thread.start()
        ready.result(START_TIMEOUT)

    def update(self, plan: Plan) -> None:
        """Take `plan`. Plans handed faster than this loop takes them are not queued: the
        latest wins, with the differences of those it replaces (Plan.after)."""
        with self._plan_lock:
            pending = self._next_plan
            self._next_plan = plan if pending is None else plan.after(pending)
            schedule, self._taking = not self._taking, True
        if schedule and not self._call(self._take_plan):
            with self._plan_lock:  # no loop yet (or any more): kept for when one starts
                self._taking = False

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

    def _call(self, fn: Callable[..., None], *args: object) -> bool:
        """Run `fn` on the data plane's loop; False when there is none running."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)
            return True
        return False

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
        with self._plan_lock:
            if self._next_plan is not None and not self._taking:  # handed before the loop ran
                self._taking = True
                self.loop.call_soon(self._take_plan)
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
        cpu = _cpu()
        while not self._stop.is_set():
            # a plain sleep (_shutdown cancels this task): a wait_for on the stop event built
            # a task and a timeout every tick
            await asyncio.sleep(max(0.0, expected - time.monotonic()))
            now = time.monotonic()
            lag = max(0.0, now - expected)
            if lag > STALL:  # requests queued during the stall are stale: answer none of them
                dropped = self.announcer.discard_pending()
                mine, process = (b - a for a, b in zip(cpu, _cpu(), strict=True))
                # CPU since the last tick: this loop's own turns (mine), the process's other
                # threads (process - mine: the GIL), or neither (the process was not scheduled)
                log.warning(
                    "loop_stalled seconds=%.2f frames_dropped=%d cpu_loop=%.2f cpu_process=%.2f",
                    lag,
                    dropped,
                    mine,
                    process,
                )
            self.liveness.on_lag(lag, now)
            self._act(self.liveness.tick(expected if lag < PROBE_INTERVAL else now))
            self._apply()
            self._log_peers(now)
            self._ticked = time.monotonic()
            cpu = _cpu()
            expected = _on_phase(max(now, expected) + PROBE_INTERVAL / 2)

    def _take_plan(self) -> None:
        """The latest plan handed over, at most as often as taking one costs: a plan is O(groups)
        on this loop, and a burst of them must not keep it from its ticks and frames."""
        assert self.loop is not None
        wait = self._plan_ready_at - time.monotonic()
        if wait > 0:
            self.loop.call_later(wait, self._take_plan)
            return
        with self._plan_lock:
            plan, self._next_plan, self._taking = self._next_plan, None, False
        if plan is None:
            return
        start = time.monotonic()
        self._update(plan)
        end = time.monotonic()
        self._plan_ready_at = end + (end - start)

    def _update(self, plan: Plan) -> None:
        """Take a plan: whole, or only the groups it changed (at 10,000 groups held, a whole
        plan is ~0.1 s of this loop, one changed group ~0.2 ms; docs/performance.md)."""
        self.plan = plan
        now = time.monotonic()
        if plan.changed is None:
            self._group_of = {ip: g for g in plan.groups for ip in g.ips}
            self.liveness.set_groups(plan.groups, now)
            self._check_carry(now)
            self.reports.forget(plan.addresses)
            self._apply(everything=True)
            return
        changed = plan.changed
        for key in changed:
            old = self.liveness.groups.get(key)
            for ip in old.ips if old is not None else ():
                if self._group_of.get(ip) is old:
                    del self._group_of[ip]
        for new in changed.values():
            if new is not None:
                self._group_of.update(dict.fromkeys(new.ips, new))
        self.liveness.update_groups(changed, now)
        self._check_carry(now, changed)
        self.reports.forget(plan.addresses)
        self._apply(keys=changed)

    def interfaces_changed(self) -> None:
        """The announcer's interface view changed (data-plane loop): a group this node could
        not carry may be carried now, and the other way round. Without this, a link that
        comes back would wait for the next plan, which may never come in a quiet cluster."""
        self._check_carry(time.monotonic())
        self._apply(everything=True)

    def _check_carry(self, now: float, keys: Iterable[IPAddress] | None = None) -> None:
        """The groups this node is ranked for but has no interface for: `keys` checked again
        (None: every group)."""
        groups = self.liveness.groups
        if keys is None:
            cannot = {k for k, g in groups.items() if self._cannot_carry(g)}
        else:
            cannot = set(self.liveness.cannot)
            for key in keys:
                group = groups.get(key)
                if group is not None and self._cannot_carry(group):
                    cannot.add(key)
                else:
                    cannot.discard(key)
        if cannot != self.liveness.cannot:
            self.liveness.set_cannot_carry(frozenset(cannot), now)
            self._carry_changed = True  # the control loop's NoInterfaceForIP conditions

    def _cannot_carry(self, group: GroupView) -> bool:
        return self.me in group.ranking and self._interface(group) is None

    def _set_fresh(self, fresh: bool) -> None:
        self.fresh = self.liveness.fresh = fresh

    def _interface(self, group: GroupView) -> str | None:
        allowed = tuple(self.plan.interfaces.get(group.key, ()))
        return self.announcer.interface_for(group.key, allowed)

    def _apply(self, *, everything: bool = False, keys: Iterable[IPAddress] = ()) -> None:
        """Hand the announcer what changed in what this node holds; tell the control loop.
        Redoes the groups whose holding changed (Liveness.held tracks them) and `keys` (groups
        a plan changed), or every group: it runs after every message and tick, and costs
        nothing when nothing changed."""
        lv = self.liveness
        touched: Iterable[IPAddress]
        touched = lv.held.take_changed()
        if everything:
            touched = self._held.keys() | lv.held.keys()
        elif keys:
            touched = touched | set(keys)
        if not touched and not self._carry_changed:
            return
        gained: list[IPAddress] = []
        lost: list[IPAddress] = []
        changes: dict[IPAddress, str | None] = {}
        changed: set[IPAddress] = set()  # the groups whose Held changed
        for key in touched:
            old = self._held.get(key)
            new = self._held_now(key)
            if new == old:
                continue
            changed.add(key)
            for ip in old.ips if old is not None else ():
                changes[ip] = None
            if new is None:
                del self._held[key]
                self._epochs.pop(key, None)
                lost.append(key)
                continue
            for ip in new.ips:
                changes[ip] = new.interface
            self._held[key] = new
            if old is None:
                gained.append(key)
        retaken = self._retaken(touched)
        if gained or lost:
            self.ownership_changes += len(gained) + len(lost)
            self._log_ownership(gained, lost)
        carry_changed, self._carry_changed = self._carry_changed, False
        if changes:
            self.announcer.update(changes)
        for key in retaken:
            self._reannounce(key)
        if changed or carry_changed:
            # what changed, for the control loop to check those groups' conditions; None (all)
            # when the groups this node cannot carry changed
            self.on_change(dict(self._held), None if carry_changed else frozenset(changed))

    def _held_now(self, key: IPAddress) -> Held | None:
        group = self.liveness.groups.get(key)
        if key not in self.liveness.held or group is None:
            return None
        iface = self._interface(group)
        if iface is None:
            return None
        return Held(key, group.ips, iface, self.liveness.verdicts.get(key, Verdict.OWNER))

    def _retaken(self, keys: Iterable[IPAddress]) -> list[IPAddress]:
        """Groups held before and now at a newer epoch: taken again, with another holder in
        between (say the rank-1 node took one back and left at once, before this acting owner
        heard it took it). The announcer never let go, so it would send no burst, and clients
        would keep the MAC of the node that left."""
        retaken = []
        held = self.liveness.held
        for key in keys:
            epoch, before = held.get(key), self._epochs.get(key)
            if key in self._held and epoch is not None:
                if before is not None and before != epoch:
                    retaken.append(key)
                self._epochs[key] = epoch
        return retaken

    def _reannounce(self, key: IPAddress) -> None:
        log.info("group_retaken key=%s epoch=%d", key, self._epochs[key])
        for ip in self._held[key].ips:
            with contextlib.suppress(KeyError):  # one the announcer could not hold
                self.announcer.reannounce(ip)

    def _log_ownership(self, gained: list[IPAddress], lost: list[IPAddress]) -> None:
        """One line per group taken or dropped (the first LOG_GROUPS of each, then a count)."""
        for what, keys in (("taken", gained), ("dropped", lost)):
            for key in sorted(keys[:LOG_GROUPS], key=str):
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


def _cpu() -> tuple[float, float]:
    """CPU seconds of this thread and of the whole process."""
    return time.thread_time(), time.process_time()
