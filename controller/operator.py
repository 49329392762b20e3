"""The controller's async glue: kopf handlers call it; it asks the reconciler, queues the
decisions (controller.workqueue: one entry per object, the newest decision wins) and writers apply
them through kube.Kube in worker threads, retrying what failed. Built by runner.

Handlers never wait for a write: kopf's per-object worker ends as soon as the decision is queued,
so a burst of new Services holds a small Work per Service, not kopf's worker and body.
Conflicts (409) are resolved by re-reading the Service and deciding again; other failures put the
Service on a retry list with capped backoff, so a flaky API delays convergence but loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from controller.events import EventWrite
from controller.kube import Conflict, Kube, KubeError, NotLeader
from controller.observed import ServiceWrite
from controller.reconciler import Decisions, Reconciler
from controller.workqueue import KeyedQueue
from lbctl.core.model import ServiceKey, service_key

log = logging.getLogger("lbctl.controller")
T = TypeVar("T")
Body = Mapping[str, Any]

MAX_REDECIDE = 5  # 409s in a row for one write before it goes to the retry list
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds; the last repeats
STARTUP_ATTEMPTS = 60  # of reading the cluster at start-up (about a minute with backoff)
HEARTBEAT = 1.0  # seconds between liveness beats
# kopf re-lists after a 410 (or its first listing) with event type None and never sends the
# DELETED events the watch gap hid: once a listing has been quiet this long, sweep for them.
RELIST_SETTLE = 1.0
LIVENESS_GRACE = 15.0  # /livez fails when the loop has not beaten for this long
WORKERS = 8  # writers, and threads making their API calls


@dataclass(frozen=True, slots=True)
class Work:
    """What is left to do about one object: its patch, then its Events. `settle`: build the
    patch (and Events) from the reconciler's state when a writer takes it (Decisions.settle)."""

    write: ServiceWrite | None = None
    events: tuple[EventWrite, ...] = ()
    depth: int = 0  # 409s in a row that led to this write
    settle: bool = False


def _merge(waiting: Work, newer: Work) -> Work:
    """A newer decision replaces the waiting patch (it was made from a newer or equal view of
    the object; `settle` reads the newest); Events are never dropped."""
    events = waiting.events + newer.events
    if newer.write is None and not newer.settle:
        return Work(waiting.write, events, waiting.depth, waiting.settle)
    return Work(newer.write, events, newer.depth, newer.settle)


WorkKey = tuple[str, str, str]  # kind, namespace, name of the object written or reported on


class Operator:
    """One replica's behaviour; every method runs on the kopf event loop.

    Only an active replica decides. `activate()` (at start-up when `leader()` says yes, or by the
    HA elector on winning the Lease) builds a fresh Reconciler and restores it from a full
    listing before deciding anything; watch events that arrive meanwhile are remembered and
    re-read afterwards. A standby keeps no allocator state at all, so it can never act on
    decisions made while another replica was writing.
    """

    def __init__(
        self,
        make_reconciler: Callable[[], Reconciler],
        kube: Kube,
        *,
        leader: Callable[[], bool] = lambda: True,
        workers: int = WORKERS,
    ) -> None:
        self._make = make_reconciler
        self.reconciler = make_reconciler()
        self.kube = kube
        self.leader = leader
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lbctl-kube")
        self._workers = workers
        self._work: KeyedQueue[WorkKey, Work] = KeyedQueue(_merge)
        self._due: dict[ServiceKey, float] = {}  # Services to re-decide, and when
        self._attempts: dict[ServiceKey, int] = {}  # failed attempts in a row
        self.ready = False
        self.active = False
        self._restoring = False
        self._missed: set[ServiceKey] = set()  # Service events seen while restoring
        self._missed_other = False  # a Namespace or ConfigMap event seen while restoring
        self._epoch = 0  # bumped by deactivate(): an activation begun before it must not finish
        self._activation: asyncio.Task[None] | None = None
        self._sweep_at: float | None = None  # when to look for Services deleted unseen
        self.events_seen = 0  # watch events handed to us, deciding or not
        self.activations = 0  # restores completed (each rebuilds the allocator from scratch)
        self._beat = time.monotonic()

    # --- probes (called from the health server's thread) -----------------------------------

    def alive(self) -> bool:
        return time.monotonic() - self._beat < LIVENESS_GRACE

    def is_ready(self) -> bool:
        return self.ready

    # --- activation ---------------------------------------------------------------------

    async def startup(self) -> None:
        """kopf start-up, before any watch: restore and decide now if we may write."""
        if self.leader():
            await asyncio.wait([self.start_activation()])  # a cancelled one does not raise here
        self.ready = True

    def start_activation(self) -> asyncio.Task[None]:
        """Activate in a task of its own (the elector's callback cannot wait), or join the one
        running; deactivate() cancels it."""
        if self._activation is None or self._activation.done():
            self._activation = asyncio.get_running_loop().create_task(
                self._activate_while_leading(), name="lbctl-activate"
            )
            self._activation.add_done_callback(_log_failure)
        return self._activation

    async def _activate_while_leading(self) -> None:
        """activate(), tried again while we still lead: a leader that failed to restore (the
        API went away meanwhile) must not sit on the Lease deciding nothing."""
        for attempt in range(STARTUP_ATTEMPTS):
            if not self.leader():
                return
            try:
                await self.activate()
                return
            except (KubeError, RuntimeError) as err:
                log.warning("activation_failed attempt=%d error=%s", attempt + 1, err)
            await asyncio.sleep(_delay(attempt))
        raise RuntimeError(f"could not activate after {STARTUP_ATTEMPTS} attempts")

    async def activate(self) -> None:
        """Become the deciding replica: fresh state, restored from what Services hold."""
        if self.active or self._restoring:
            return
        self._restoring, epoch = True, self._epoch
        self._missed.clear()
        self._missed_other = False
        try:
            await self._restore()
            # Active from here: later events are decided as they come. Waiting for a quiet
            # moment before that would starve under steady churn (a busy takeover never ends).
            missed, other = self._missed, self._missed_other
            self._missed, self._missed_other = set(), False
            self.active = epoch == self._epoch  # deactivated meanwhile: stay a standby
        finally:
            self._restoring = False
        log.info("activated" if self.active else "activation_abandoned reason=deactivated")
        if self.active:
            await self._catch_up(missed, other)

    async def _catch_up(self, missed: set[ServiceKey], other: bool) -> None:
        """Decide again, from what the API holds now, what changed while restoring."""
        if other:
            try:
                await self._reread_others()
            except KubeError as err:
                log.warning("catch_up_failed what=config_or_namespaces error=%s", err)
        for key in sorted(missed):
            try:
                await self.redecide(key)
            except KubeError as err:
                log.warning("catch_up_failed service=%s error=%s", key, err)
                self._schedule(key)

    def deactivate(self) -> None:
        """Stop deciding now (the elector lost the Lease); a restore in progress is cancelled
        and the allocator dropped: the next activate() rebuilds it from Service status."""
        self._epoch += 1
        if self._activation is not None and not self._activation.done():
            self._activation.cancel()
        if self.active:
            log.info("deactivated")
        self.active = False
        self._work.clear()
        self._due.clear()
        self._attempts.clear()
        self.reconciler = self._make()

    async def _restore(self) -> None:
        self.reconciler = self._make()
        ns, name = self.reconciler.config.namespace, self.reconciler.config.name
        for attempt in range(STARTUP_ATTEMPTS):
            try:
                configmap = await self._run(self.kube.get_configmap, ns, name)
                namespaces = await self._run(self.kube.list_namespaces)
                # Digested page by page (in a kube thread: this fresh Reconciler is not in use
                # yet), so the restore never holds the listed bodies themselves.
                self.reconciler.load_namespaces(namespaces)
                services = await self._run(self.kube.list_services, self.reconciler.digest)
                break
            except KubeError as err:
                log.warning("restore_read_failed attempt=%d error=%s", attempt + 1, err)
                await asyncio.sleep(_delay(attempt))
        else:
            raise RuntimeError("could not read the cluster to restore")
        decisions = self.reconciler.restore(
            configmap=configmap, namespaces=namespaces, services=services, defer=True
        )
        self.apply(decisions)
        self.activations += 1
        log.info("restore_done services=%d to_settle=%d", len(services), len(decisions.settle))

    async def _reread_others(self) -> None:
        ns, name = self.reconciler.config.namespace, self.reconciler.config.name
        self.apply(self.reconciler.on_config(await self._run(self.kube.get_configmap, ns, name)))
        for body in await self._run(self.kube.list_namespaces):
            self.apply(self.reconciler.on_namespace(body))

    def _deciding(self, key: ServiceKey | None) -> bool:
        """Whether to decide on an event now; while restoring, remember it for afterwards."""
        self.events_seen += 1
        if self.active:
            return True
        if self._restoring:
            if key is None:
                self._missed_other = True
            else:
                self._missed.add(key)
        return False

    # --- kopf entry points ------------------------------------------------------------------

    async def on_service(self, event_type: str | None, body: Body) -> None:
        key = _key(body)
        if not self._deciding(key):
            return
        if event_type is None:  # kopf is (re-)listing
            self._sweep_at = time.monotonic() + RELIST_SETTLE
        if event_type == "DELETED":
            self._forget(key)
            self.apply(self.reconciler.on_service_deleted(body))
        else:
            self.apply(self.reconciler.on_service(body, defer=True))

    async def on_namespace(self, event_type: str | None, body: Body) -> None:
        if not self._deciding(None):
            return
        if event_type == "DELETED":
            self.reconciler.on_namespace_deleted(body)
        else:
            self.apply(self.reconciler.on_namespace(body))

    async def on_config(self, event_type: str | None, body: Body) -> None:
        if not self._deciding(None):
            return
        self.apply(self.reconciler.on_config(None if event_type == "DELETED" else body))

    # --- applying decisions -----------------------------------------------------------------

    def apply(self, decisions: Decisions, depth: int = 0) -> None:
        """Queue the decisions for the writers (never waits for the API)."""
        for write in decisions.services:
            ns, name = write.key.split("/", 1)
            self._work.put(("Service", ns, name), Work(write=write, depth=depth))
        for event in decisions.events:
            ref = event.ref
            self._work.put((ref.kind, ref.namespace, ref.name), Work(events=(event,)))
        for key in decisions.settle:
            ns, name = key.split("/", 1)
            self._work.put(("Service", ns, name), Work(depth=depth, settle=True))

    def start_writers(self) -> list[asyncio.Task[None]]:
        """The tasks applying queued work, `workers` objects at a time. Created at once, before
        kopf starts (runner): kopf waits at exit for tasks created after it, about 5 s."""
        loop = asyncio.get_running_loop()
        return [
            loop.create_task(self._writer(), name=f"lbctl-writer-{i}") for i in range(self._workers)
        ]

    async def _writer(self) -> None:
        while True:
            key, work = await self._work.get()
            try:
                write, events = work.write, work.events
                if work.settle and self.active:
                    fresh = self.reconciler.settle(service_key(key[1], key[2]))
                    write = fresh.services[0] if fresh.services else None
                    events += tuple(fresh.events)
                if write is not None:
                    await self._apply_service(write, work.depth)
                for event in events:
                    await self._post(event)
            except Exception as err:  # a writer must outlive any one object's surprise
                log.exception("write_crashed object=%s error=%r", "/".join(key), err)
                if key[0] == "Service":
                    self._schedule(service_key(key[1], key[2]))
            finally:
                self._work.done(key)

    def queued(self) -> int:
        """Objects with work waiting for a writer (those being written not counted)."""
        return self._work.waiting()

    async def _apply_service(self, write: ServiceWrite, depth: int) -> None:
        try:
            body, between = await self._run(self.kube.apply_service, write)
        except NotLeader:
            log.debug("write_fenced service=%s", write.key)
        except Conflict:
            if depth >= MAX_REDECIDE:
                self._schedule(write.key)
                return
            await self.redecide(write.key, depth + 1)
        except KubeError as err:
            log.warning("write_failed service=%s error=%s", write.key, err)
            self._schedule(write.key)
        else:
            self._forget(write.key)
            self.reconciler.observe(body, between)

    async def redecide(self, key: ServiceKey, depth: int = 0) -> None:
        """Read a Service again and decide from what the API holds now."""
        ns, name = key.split("/", 1)
        body = await self._run(self.kube.get_service, ns, name)
        if body is None:
            stub = {"metadata": {"namespace": ns, "name": name}}
            self.apply(self.reconciler.on_service_deleted(stub), depth)
        else:
            self.apply(self.reconciler.on_service(body), depth)

    async def sweep(self) -> None:
        """Release Services the allocator knows but the API no longer lists (deleted while a
        watch was down). Known before listing, so a Service created meanwhile is not at risk."""
        rec = self.reconciler
        alloc = rec.allocator
        known = {a.key for a in alloc.assignments()} | {r.key for r in alloc.pending_requests()}
        listed = set(await self._run(self.kube.list_services, _key))
        if rec is not self.reconciler or not self.active:
            return  # deactivated meanwhile: the next activation restores from a listing anyway
        for key in sorted(known - listed):
            log.info("service_gone service=%s seen=listing", key)
            ns, name = key.split("/", 1)
            stub = {"metadata": {"namespace": ns, "name": name}}
            self.apply(rec.on_service_deleted(stub))

    async def _post(self, event: EventWrite) -> None:
        try:
            await self._run(self.kube.post_event, event)
        except NotLeader:
            pass
        except KubeError as err:  # Events are best effort: the condition carries the same news
            log.warning("event_failed reason=%s error=%s", event.reason.value, err)

    # --- background loops (started by runner before kopf) -------------------------------

    def _schedule(self, key: ServiceKey) -> None:
        attempts = self._attempts.get(key, 0)
        self._attempts[key] = attempts + 1
        self._due[key] = time.monotonic() + _delay(attempts)

    def _forget(self, key: ServiceKey) -> None:
        self._due.pop(key, None)
        self._attempts.pop(key, None)

    async def retry_loop(self, period: float = 0.1) -> None:
        """Re-decide Services whose write failed, when their backoff is due."""
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if self._sweep_at is not None and self._sweep_at <= now:
                self._sweep_at = None
                await self._sweep_quietly()
            due = [k for k, when in self._due.items() if when <= now][:100]  # bounded per tick
            for key in due:
                self._due.pop(key, None)
                try:
                    await self.redecide(key)
                except KubeError as err:
                    log.warning("retry_failed service=%s error=%s", key, err)
                    self._schedule(key)
                if key not in self._due:
                    self._attempts.pop(key, None)

    async def _sweep_quietly(self) -> None:
        if not self.active:
            return
        try:
            await self.sweep()
        except KubeError as err:
            log.warning("sweep_failed error=%s", err)
            self._sweep_at = time.monotonic() + RETRY_DELAYS[-1]

    async def heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT)

    def pending_retries(self) -> int:
        return len(self._due)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._activation is not None:
            self._activation.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (err := task.exception()) is not None:
        log.error("activation_failed error=%r", err, exc_info=err)


def _delay(attempt: int) -> float:
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


def _key(body: Body) -> ServiceKey:
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return service_key(str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
