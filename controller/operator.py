"""Activation and leadership: kopf handlers call the Operator; only the active replica asks the
reconciler and queues its decisions for controller.writers; controller.retries decides again when
writes fail. Built by runner.

A standby keeps no allocator state. Activation (at start-up, or when the elector wins the Lease)
builds a fresh Reconciler and restores it from a full listing before deciding anything. A leader
that only missed its renew deadline (suspend) keeps its state until it renews its own Lease record
(resume, no listing) or sees another holder (forget).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from controller.blocked import Blockers, refused
from controller.kube import Kube, KubeError
from controller.reconciler import Decisions, Reconciler
from controller.retries import Retries, delay
from controller.writers import WORKERS, Writers
from lbctl.core.model import ServiceKey, service_key

log = logging.getLogger("lbctl.controller")
Body = Mapping[str, Any]

STARTUP_ATTEMPTS = 60  # of reading the cluster at start-up (about a minute with backoff)


class Operator:
    """One replica's behaviour; every method runs on the kopf event loop.

    Only an active replica decides. `activate()` (at start-up when `leader()` says yes, or by the
    HA elector on winning the Lease) builds a fresh Reconciler and restores it from a full
    listing before deciding anything; watch events that arrive meanwhile are remembered and
    re-read afterwards (those the listing already showed, not). A standby keeps no allocator
    state at all, so it can never act on decisions made while another replica was writing; a
    suspended leader keeps its state only while nobody else can have written (the elector's
    `continued`), and drops it when another replica leads.
    """

    def __init__(
        self,
        make_reconciler: Callable[[], Reconciler],
        kube: Kube,
        *,
        leader: Callable[[], bool] = lambda: True,
        workers: int = WORKERS,
        blockers: Blockers | None = None,
    ) -> None:
        self._make = make_reconciler
        self.blockers = blockers or Blockers()
        self.reconciler = make_reconciler()
        self.kube = kube
        self.leader = leader
        self.retries = Retries(self.redecide, self._sweep_if_active)
        self.writers = Writers(kube, self, self.retries, workers)
        self._workers = workers
        self.ready = False
        self.active = False
        self._restoring = False
        # Service events seen while restoring: key -> the resourceVersion its latest showed
        # ("" for a deletion, which is always read again).
        self._missed: dict[ServiceKey, str] = {}
        self._missed_other = False  # a Namespace or ConfigMap event seen while restoring
        self._suspended = False  # lost the Lease with its state kept, for resume()
        self._epoch = 0  # bumped by deactivate(): an activation begun before it must not finish
        self._activation: asyncio.Task[None] | None = None
        self.events_seen = 0  # watch events handed to us, deciding or not
        self.activations = 0  # restores completed (each rebuilds the allocator from scratch)

    # --- probes (called from the health server's thread) -----------------------------------

    def is_ready(self) -> bool:
        return self.ready

    def missed(self) -> frozenset[ServiceKey]:
        """The Services whose events came while restoring or suspended, to read again."""
        return frozenset(self._missed)

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
            await asyncio.sleep(delay(attempt))
        raise RuntimeError(f"could not activate after {STARTUP_ATTEMPTS} attempts")

    async def activate(self) -> None:
        """Become the deciding replica: fresh state, restored from what Services hold."""
        if self.active or self._restoring:
            return
        self._restoring, epoch = True, self._epoch
        self._missed.clear()
        self._missed_other = False
        try:
            listed = await self._restore()
            # Active from here: later events are decided as they come. Waiting for a quiet
            # moment before that would starve under steady churn (a busy takeover never ends).
            # An event showing the very version the listing showed needs no second look: kopf
            # lists every Service when it starts, as the restore does, so right after a start
            # with a backlog nearly every Service is one (10,000 GETs for nothing, before).
            missed = {key for key, version in self._missed.items() if listed.get(key) != version}
            other = self._missed_other
            self.active = epoch == self._epoch  # deactivated meanwhile: stay a standby
            if self.active and not self.leader():
                # The Lease was lost while restoring, not to another replica (that deactivates):
                # keep the state and the events seen, for resume().
                self.active, self._suspended = False, True
                log.info("activation_suspended reason=renew_deadline")
                return
            self._missed, self._missed_other = {}, False
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
        todo = iter(sorted(missed))

        async def reread() -> None:  # up to `workers` reads at a time, never one by one
            for key in todo:
                if not self.active:
                    return  # deactivated meanwhile: the next activation lists everything
                try:
                    await self.redecide(key)
                except KubeError as err:
                    log.warning("catch_up_failed service=%s error=%s", key, err)
                    self.retries.schedule(key)

        await asyncio.gather(*(reread() for _ in range(self._workers)))

    def suspend(self) -> None:
        """Stop deciding now (the elector lost the Lease), keeping the state for resume():
        writes still queued are dropped (fenced anyway), events are remembered as while
        restoring. A restore goes on (it only reads; activate() checks the fence at its end,
        so a restore of 10,000 Services is not restarted at each missed renewal); a standby
        has nothing worth keeping."""
        if self._restoring:
            return
        if not self.active:
            self.deactivate()
            return
        log.info("suspended")
        self.active, self._suspended = False, True
        self._missed.clear()
        self._missed_other = False
        self.writers.clear()
        self.retries.clear()

    def resume(self) -> bool:
        """Decide again with the state suspend() kept, once the elector says nobody else held
        the Lease meanwhile (so nobody else wrote): every known Service is settled again, and
        those whose events showed a version other than the one known are read again. Costs
        no listing: a leader starved past its renew deadline (2 s) does not restore 10,000
        Services each time. False (nothing done) if there is no such state."""
        if self._restoring:
            return True  # its activate() goes on, and decides as the leader
        if not self._suspended:
            return False
        rec = self.reconciler
        missed = {key for key, version in self._missed.items() if _version_of(rec, key) != version}
        other = self._missed_other
        self._missed, self._missed_other = {}, False
        self.active, self._suspended = True, False
        log.info("resumed to_settle=%d to_read=%d", len(rec.known()), len(missed))
        self.apply(Decisions(settle=rec.known()))
        self._activation = asyncio.get_running_loop().create_task(
            self._catch_up(missed, other), name="lbctl-resume"
        )
        self._activation.add_done_callback(_log_failure)
        return True

    def forget(self) -> None:
        """Another replica leads: drop what suspend() kept, or a restore still going on (a
        standby keeps no state)."""
        if self._suspended or self._restoring:
            self.deactivate()

    def deactivate(self) -> None:
        """Stop deciding now (the elector lost the Lease); a restore in progress is cancelled
        and the allocator dropped: the next activate() rebuilds it from Service status."""
        self._epoch += 1
        self._suspended = False
        if self._activation is not None and not self._activation.done():
            self._activation.cancel()
        if self.active:
            log.info("deactivated")
        self.active = False
        self.writers.clear()
        self.retries.clear()
        self.reconciler = self._make()
        self.blockers.clear_all("read")  # a standby reads nothing, and has no config to judge
        self.blockers.clear_all("config")

    async def _restore(self) -> dict[ServiceKey, str]:
        """A fresh Reconciler restored from a full listing; returns the resourceVersion each
        listed Service had."""
        self.reconciler = self._make()
        ns, name = self.reconciler.config.namespace, self.reconciler.config.name
        for attempt in range(STARTUP_ATTEMPTS):
            try:
                configmap = await self.writers.call(self.kube.get_configmap, ns, name)
                namespaces = await self.writers.call(self.kube.list_namespaces)
                # Digested page by page (in a kube thread: this fresh Reconciler is not in use
                # yet), so the restore never holds the listed bodies themselves.
                self.reconciler.load_namespaces(namespaces)
                services = await self.writers.call(self.kube.list_services, self.reconciler.digest)
                break
            except KubeError as err:
                level = logging.DEBUG if refused(self.blockers, "read", err) else logging.WARNING
                log.log(level, "restore_read_failed attempt=%d error=%s", attempt + 1, err)
                await asyncio.sleep(delay(attempt))
        else:
            raise RuntimeError("could not read the cluster to restore")
        self.blockers.clear_all("read")
        decisions = self.reconciler.restore(
            configmap=configmap, namespaces=namespaces, services=services, defer=True
        )
        self._judge_config(configmap)
        self.apply(decisions)
        self.activations += 1
        log.info("restore_done services=%d to_settle=%d", len(services), len(decisions.settle))
        return {item.obs.key: item.obs.resource_version for item in services}

    async def _reread_others(self) -> None:
        ns, name = self.reconciler.config.namespace, self.reconciler.config.name
        configmap = await self.writers.call(self.kube.get_configmap, ns, name)
        self.apply(self.reconciler.on_config(configmap))
        self._judge_config(configmap)
        for body in await self.writers.call(self.kube.list_namespaces):
            self.apply(self.reconciler.on_namespace(body))

    def _deciding(self, key: ServiceKey | None, version: str = "") -> bool:
        """Whether to decide on an event now; while restoring, remember it (and the version it
        showed) for afterwards."""
        self.events_seen += 1
        if self.active:
            return True
        if self._restoring or self._suspended:
            if key is None:
                self._missed_other = True
            else:
                self._missed[key] = version
        return False

    # --- kopf entry points ------------------------------------------------------------------

    async def on_service(self, event_type: str | None, body: Body) -> None:
        key = _key(body)
        if not self._deciding(key, "" if event_type == "DELETED" else _version(body)):
            return
        if event_type is None:  # kopf is (re-)listing
            self.retries.sweep_after()
        if event_type == "DELETED":
            self.retries.forget(key)
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
        configmap = None if event_type == "DELETED" else body
        self.apply(self.reconciler.on_config(configmap))
        self._judge_config(configmap)

    def _judge_config(self, body: Body | None) -> None:
        """A start blocker while no config is in force (ConfigMap or key missing, invalid)."""
        found = self.reconciler.config.blocker(body)
        self.blockers.clear_all("config", but=None if found is None else found[0])
        if found is not None:
            self.blockers.block(found[0], "config", found[1])

    # --- deciding again -------------------------------------------------------------------

    def apply(self, decisions: Decisions, depth: int = 0) -> None:
        """Queue the decisions for the writers (never waits for the API)."""
        self.writers.apply(decisions, depth)

    def queued(self) -> int:
        return self.writers.queued()

    def pending_retries(self) -> int:
        return self.retries.pending()

    async def redecide(self, key: ServiceKey, depth: int = 0) -> None:
        """Read a Service again and decide from what the API holds now."""
        ns, name = key.split("/", 1)
        body = await self.writers.call(self.kube.get_service, ns, name)
        if body is None:
            stub = {"metadata": {"namespace": ns, "name": name}}
            self.apply(self.reconciler.on_service_deleted(stub), depth)
        else:
            self.apply(self.reconciler.on_service(body), depth)

    async def _sweep_if_active(self) -> None:
        if self.active:
            await self.sweep()

    async def sweep(self) -> None:
        """Release Services the allocator knows but the API no longer lists (deleted while a
        watch was down). Known before listing, so a Service created meanwhile is not at risk."""
        rec = self.reconciler
        alloc = rec.allocator
        known = {a.key for a in alloc.assignments()} | {r.key for r in alloc.pending_requests()}
        listed = set(await self.writers.call(self.kube.list_services, _key))
        if rec is not self.reconciler or not self.active:
            return  # deactivated meanwhile: the next activation restores from a listing anyway
        for key in sorted(known - listed):
            log.info("service_gone service=%s seen=listing", key)
            ns, name = key.split("/", 1)
            stub = {"metadata": {"namespace": ns, "name": name}}
            self.apply(rec.on_service_deleted(stub))

    def close(self) -> None:
        if self._activation is not None:
            self._activation.cancel()
        self.writers.close()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (err := task.exception()) is not None:
        log.error("activation_failed error=%r", err, exc_info=err)


def _version_of(rec: Reconciler, key: ServiceKey) -> str | None:
    seen = rec.seen(key)
    return None if seen is None else seen.resource_version


def _version(body: Body) -> str:
    meta = body.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, Mapping) else ""


def _key(body: Body) -> ServiceKey:
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return service_key(str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
