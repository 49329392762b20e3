"""Turns Service, Namespace and ConfigMap bodies into decisions: the writes to make. Owns the
Allocator; called by controller.operator, never touches the API itself (kube.py applies writes).

Level-based: every entry point may be called any number of times with the same body and returns
no write once the API shows the desired state. The allocator is the truth about who holds what;
IPs found in a Service's status are adopted only the first time the Service is seen (start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from controller import conditions
from controller.config import ConfigState, summary
from controller.decisions import Decisions, NoRecorder, Recorder
from controller.events import Deduper, EventReason, EventType, ObjectRef

__all__ = ["Decisions", "Listed", "Reconciler", "Recorder"]  # Decisions: callers import it here
from controller.observed import (
    Desired,
    Listed,
    Observed,
    created_of,
    fallback_request,
    labels_of,
    plan,
)
from lbctl.core.adapt import AdaptFailure, adapt_service, key_of
from lbctl.core.allocator import Allocator, Assignment, Failure, Result
from lbctl.core.model import (
    Config,
    ConfigError,
    IPAddress,
    ServiceKey,
    ServiceRequest,
)
from lbctl.core.reasons import AllocFailure, AllocSuccess

log = logging.getLogger("lbctl.controller")
Body = Mapping[str, Any]


class Reconciler:
    """Decisions for one controller: the allocator, the config in force, what was last seen."""

    def __init__(
        self,
        config_ref: tuple[str, str],
        *,
        lb_class: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recorder: Recorder | None = None,
    ) -> None:
        self.config = ConfigState(*config_ref)
        self.allocator = Allocator(Config(), lb_class=lb_class)
        self.lb_class = lb_class
        self._clock = clock
        self._recorder: Recorder = recorder or NoRecorder()
        self._seen: dict[ServiceKey, Observed] = {}  # our Services (and ones carrying our traces)
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._events = Deduper()
        self._between: dict[ServiceKey, str] = {}  # see observe()

    # --- start-up ---------------------------------------------------------------------------

    def load_namespaces(self, namespaces: Iterable[Body]) -> None:
        """Namespace labels (pool scopes) before digesting Services: restore() does it first."""
        for ns in namespaces:
            self._ns_labels[key_of(ns).split("/", 1)[1]] = labels_of(ns)

    def digest(self, body: Body) -> Listed:
        """What restore() needs of one listed Service (call after load_namespaces)."""
        obs = Observed.of(body)
        return Listed(created_of(body), obs, self._request(body) if self._ours(obs) else None)

    def restore(
        self,
        *,
        configmap: Body | None,
        namespaces: Iterable[Body],
        services: Iterable[Body | Listed],
        defer: bool = False,
    ) -> Decisions:
        """Rebuild state from a full listing, before any other decision: IPs in status are kept.
        `services`: bodies, or Listed digests of them. `defer` as in on_service: the Services
        to settle are named, their writes built later."""
        self.load_namespaces(namespaces)
        out = self.on_config(configmap)
        digests = (s if isinstance(s, Listed) else self.digest(s) for s in services)
        listed = sorted(digests, key=lambda d: (d.created, d.obs.key))
        restored = 0
        for item in listed:
            obs, req = item.obs, item.req
            if req is not None and obs.ips:
                if isinstance(req, AdaptFailure):
                    req = fallback_request(obs)
                self.allocator.restore(req, obs.ips)
                self._seen[obs.key] = obs
                self._recorder.allocated(AllocSuccess.RESTORED)
                restored += 1
        log.info("restored services=%d listed=%d", restored, len(listed))
        for anomaly in self.allocator.anomalies():
            log.warning(
                "restore_anomaly service=%s reason=%s %s",
                anomaly.key,
                anomaly.reason.value,
                anomaly.message,
            )
        for item in listed:
            out += self._decide(item.obs, item.req, defer)
        return out

    # --- Services ----------------------------------------------------------------------------

    def on_service(self, body: Body, *, defer: bool = False) -> Decisions:
        """A Service was added, changed, or listed again.

        With `defer`, the allocation is made now but the Services it settles are only named
        (Decisions.settle): the controller builds their writes with settle() when a writer is
        free, so a burst of new Services waits as keys, not as patches and Event texts.
        """
        obs = Observed.of(body)
        if self._between.get(obs.key) == obs.resource_version:
            del self._between[obs.key]  # our own write, half-way: the next event shows the rest
            return Decisions()
        return self._decide(obs, self._request(body) if self._ours(obs) else None, defer)

    def _ours(self, obs: Observed) -> bool:
        return obs.load_balancer and obs.lb_class == self.lb_class

    def _decide(
        self, obs: Observed, req: ServiceRequest | AdaptFailure | None, defer: bool
    ) -> Decisions:
        """A Service as seen now; `req` (what it asks of the allocator) is None if not ours."""
        if req is None:
            return self._not_ours(obs)
        first = obs.key not in self._seen
        self._seen[obs.key] = obs
        cur = self.allocator.assignment(obs.key)
        if cur is None and first and obs.ips:
            # Holding IPs we never saw: adopt them as they are (a Service from MetalLB, or one
            # written while we were away); after this, the allocator is the truth.
            adopt = fallback_request(obs) if isinstance(req, AdaptFailure) else req
            cur = self.allocator.restore(adopt, obs.ips)
            self._recorder.allocated(AllocSuccess.RESTORED)
        if isinstance(req, AdaptFailure):
            return self._invalid(obs, req, cur)
        result = self.allocator.allocate(req)
        woken = self.allocator.drain_woken()
        if defer:
            keys = [obs.key, *(r.key for r in woken if r.key in self._seen)]
            return Decisions(settle=keys)
        out = self._settle(obs, result)
        out += self._woken(woken)
        return out

    def settle(self, key: ServiceKey) -> Decisions:
        """The write and Events taking a seen Service to what the allocator holds for it now."""
        obs = self._seen.get(key)
        result: Result | None = self.allocator.assignment(key)
        if result is None:
            result = self.allocator.pending_failure(key)
        if obs is None or result is None:
            return Decisions()  # gone, or no longer ours: its own event said so
        return self._settle(obs, result)

    def on_service_deleted(self, body: Body) -> Decisions:
        key = key_of(body)
        self._seen.pop(key, None)
        self._between.pop(key, None)
        ns, name = key.split("/", 1)
        self._events.forget("Service", ns, name)
        return self._woken(self.allocator.release(key))

    def observe(self, body: Body, between: str | None = None) -> None:
        """Record the body the API returned for our own write; `between` is the resourceVersion
        of a half-written state (status done, annotation not yet) whose watch event is skipped."""
        obs = Observed.of(body)
        if obs.key in self._seen:
            self._seen[obs.key] = obs
        if between:
            self._between[obs.key] = between

    def _request(self, body: Body) -> ServiceRequest | AdaptFailure:
        namespace = key_of(body).split("/", 1)[0]
        return adapt_service(body, namespace_labels=self._ns_labels.get(namespace))

    def _not_ours(self, obs: Observed) -> Decisions:
        """Not a LoadBalancer, or not our class: release, and take our traces off it."""
        held = self.allocator.assignment(obs.key)
        had = self._seen.pop(obs.key, None) is not None
        out = self._woken(self.allocator.release(obs.key))
        if not had and obs.condition is None and obs.pool_annotation is None:
            return out  # never ours
        ours_in_status = held is not None and obs.ips == held.ips
        if not ours_in_status and obs.condition is not None and obs.ips:
            ours_in_status = obs.condition.status == "True"
        if not obs.load_balancer:
            want = Desired(() if ours_in_status else None, None, None)
            if held is not None:
                why = f"released {conditions.ip_list(held.ips)}: type is no longer LoadBalancer"
                ips = ",".join(map(str, held.ips))
                log.info("ip_released service=%s ips=%s why=type", obs.key, ips)
                out += self._event(obs, EventType.NORMAL, EventReason.IP_RELEASED, why)
        else:
            why = f"loadBalancerClass {obs.lb_class!r} is not ours ({self.lb_class!r})"
            verdict = conditions.for_failure(AllocFailure.CLASS_MISMATCH, why)
            want = Desired(() if ours_in_status else None, verdict, None)
            if had:
                out += self._event(obs, EventType.NORMAL, EventReason.CLASS_MISMATCH, why)
        out += self._write(obs, want)
        return out

    def _invalid(self, obs: Observed, fail: AdaptFailure, cur: Assignment | None) -> Decisions:
        """Unreadable annotations: a Service keeps what it holds; one holding nothing waits."""
        reason = EventReason.INVALID_ANNOTATION
        out = self._event(obs, EventType.WARNING, reason, fail.message, by=fail.message)
        if cur is not None:
            want = Desired(cur.ips, conditions.kept_despite(cur, fail.message), keep_pool=True)
        else:
            if out:
                self._recorder.failed(fail.reason)
            out += self._woken(self.allocator.release(obs.key))  # leaves the pending queue
            verdict = conditions.for_failure(fail.reason, fail.message)
            want = Desired((), verdict, None)
        out += self._write(obs, want)
        return out

    def _settle(self, obs: Observed, result: Result) -> Decisions:
        """Decisions taking one Service to the allocator's result."""
        if isinstance(result, Assignment):
            return self._assigned(obs, result)
        return self._pending(obs, self._explain(result))

    def _assigned(self, obs: Observed, result: Assignment) -> Decisions:
        verdict = conditions.for_assignment(result)
        out = Decisions()
        if obs.ips != result.ips:
            ips, reason = ",".join(map(str, result.ips)), verdict.reason
            log.info(
                "ip_assigned service=%s ips=%s pool=%s reason=%s", obs.key, ips, result.pool, reason
            )
            self._recorder.allocated(reason)
            event = EventReason.for_success(reason)
            by = conditions.ip_list(result.ips)
            out += self._event(obs, EventType.NORMAL, event, verdict.message, by=by)
        want = Desired(result.ips, verdict, result.pool, keep_pool=result.pool is None)
        out += self._write(obs, want)
        return out

    def _pending(self, obs: Observed, failure: Failure) -> Decisions:
        reason = failure.reason
        out = self._event(obs, EventType.WARNING, EventReason.for_failure(reason), failure.message)
        if out:
            log.info("ip_pending service=%s reason=%s", obs.key, reason)
            self._recorder.failed(reason)
        out += self._write(obs, Desired((), conditions.for_failure(reason, failure.message), None))
        return out

    def _explain(self, failure: Failure) -> Failure:
        """With no valid config ever loaded, every failure is the config's fault: say so."""
        if self.config.loaded or failure.reason is AllocFailure.CLASS_MISMATCH:
            return failure
        return Failure(failure.key, AllocFailure.CONFIG_INVALID, self.config.why_no_config())

    def _woken(self, assignments: Iterable[Result]) -> Decisions:
        """Writes for other Services the allocator changed (woken from pending, renumbered)."""
        out = Decisions()
        for result in assignments:
            obs = self._seen.get(result.key)
            if obs is not None:  # unseen: its own event will come and settle it
                out += self._settle(obs, result)
        return out

    def _write(self, obs: Observed, want: Desired) -> Decisions:
        write = plan(obs, want, self._clock())
        return Decisions(services=[write]) if write is not None else Decisions()

    def _event(
        self, obs: Observed, type_: EventType, reason: EventReason, message: str, by: str = ""
    ) -> Decisions:
        ref = ObjectRef("Service", obs.namespace, obs.name, obs.uid)
        event = self._events.offer(ref, type_, reason, conditions.clip(message), by=by)
        return Decisions(events=[event]) if event is not None else Decisions()

    # --- Namespaces --------------------------------------------------------------------------

    def on_namespace(self, body: Body) -> Decisions:
        """Namespace labels feed pool scopes: retry the namespace's pending Services."""
        name = key_of(body).split("/", 1)[1]
        labels = labels_of(body)
        if self._ns_labels.get(name) == labels:
            return Decisions()
        self._ns_labels[name] = labels
        pairs = tuple(sorted(labels.items()))
        out = Decisions()
        for req in self.allocator.pending_requests():
            obs = self._seen.get(req.key)
            if req.namespace == name and obs is not None:
                result = self.allocator.allocate(replace(req, namespace_labels=pairs))
                out += self._settle(obs, result)
        out += self._woken(self.allocator.drain_woken())
        return out

    def on_namespace_deleted(self, body: Body) -> None:
        self._ns_labels.pop(key_of(body).split("/", 1)[1], None)

    # --- the pool ConfigMap ------------------------------------------------------------------

    def on_config(self, body: Body | None) -> Decisions:
        """A new ConfigMap content (None: deleted): adopt it, or keep the last good one."""
        state = self.config
        if not state.is_new(body):
            return Decisions()
        loaded = state.read(body)
        if isinstance(loaded, ConfigError):
            if body is None:
                kept = "last good config kept" if state.loaded else "no config in force"
                return self._reject(EventReason.CONFIG_MISSING, f"{state.where} not found; {kept}")
            return self._reject(EventReason.CONFIG_INVALID, str(loaded))
        change = self.allocator.update_config(loaded.config)
        if not change.accepted:
            return self._reject(EventReason.CONFIG_REJECTED, change.message)
        state.accept(loaded)
        text = summary(loaded.config)
        log.info("config_loaded configmap=%s/%s %s", state.namespace, state.name, text)
        for warning in loaded.warnings:
            log.warning("config_warning %s", warning)
        out = self._config_event(EventType.NORMAL, EventReason.CONFIG_LOADED, f"loaded {text}")
        out += self.resettle()  # covers change.woken and change.renumbered, one write each
        return out

    def _reject(self, reason: EventReason, problem: str) -> Decisions:
        self.config.reject(problem)
        log.warning("config_stale reason=%s problem=%r", reason.value, problem)
        out = self._config_event(EventType.WARNING, reason, problem)
        if not self.config.loaded:
            out += self.resettle()  # pending Services say why: the config
        return out

    def _config_event(self, type_: EventType, reason: EventReason, message: str) -> Decisions:
        state = self.config
        ref = ObjectRef("ConfigMap", state.namespace, state.name, state.uid)
        event = self._events.offer(ref, type_, reason, conditions.clip(message), by=message)
        return Decisions(events=[event]) if event is not None else Decisions()

    def resettle(self) -> Decisions:
        """Bring every seen Service's status in line with the allocator (after a config change)."""
        out = Decisions()
        for key in list(self._seen):
            out += self.settle(key)
        return out

    # --- queries (metrics, tests) -----------------------------------------------------------

    def seen(self, key: ServiceKey) -> Observed | None:
        return self._seen.get(key)

    def known(self) -> list[ServiceKey]:
        """Every Service seen that is ours (or carries our traces)."""
        return list(self._seen)

    def held(self, key: ServiceKey) -> tuple[IPAddress, ...]:
        found = self.allocator.assignment(key)
        return () if found is None else found.ips
