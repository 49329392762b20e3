"""What the controller last saw of a Service (a slim copy) and the write that brings it to the
desired state, and a listed Service's digest for a restore (Listed); used by the reconciler,
applied by kube.

Bodies are not kept whole: 10,000 Services must fit in a few MB (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller import conditions
from controller.conditions import AllocVerdict
from lbctl.core import annotations as ann
from lbctl.core.adapt import AdaptFailure, held_ips, is_load_balancer, key_of
from lbctl.core.model import IPAddress, IPFamilyPolicy, ServiceKey, ServiceRequest, family_of

Body = Mapping[str, Any]


def _map(obj: object, key: str) -> Mapping[str, Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Observed:
    """The fields of a Service body the controller compares and writes against."""

    key: ServiceKey
    uid: str
    resource_version: str
    generation: int
    load_balancer: bool
    lb_class: str | None
    ips: tuple[IPAddress, ...]  # status.loadBalancer.ingress[].ip
    has_ingress: bool  # any ingress entry at all (hostnames included)
    condition: conditions.Shown | None  # ours, lbctl.io/IPAllocated
    pool_annotation: str | None  # lbctl.io/ip-allocated-from-pool

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Observed:
        meta, spec, status = _map(body, "metadata"), _map(body, "spec"), _map(body, "status")
        generation = meta.get("generation")
        lb_class = spec.get("loadBalancerClass")
        ingress = _map(status, "loadBalancer").get("ingress")
        return cls(
            key=key_of(body),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            generation=generation if isinstance(generation, int) else 0,
            load_balancer=is_load_balancer(body),
            lb_class=lb_class if isinstance(lb_class, str) and lb_class else None,
            ips=held_ips(body),
            has_ingress=bool(ingress),
            condition=conditions.Shown.of(conditions.find(status)),
            pool_annotation=_text(_map(meta, "annotations").get(ann.ALLOCATED_FROM_POOL)),
        )

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Desired:
    """Where a Service should end up. `ips` None: leave the ingress alone; `verdict` None: remove
    our condition; `pool` is the annotation value (None removes it) unless `keep_pool`."""

    ips: tuple[IPAddress, ...] | None
    verdict: AllocVerdict | None
    pool: str | None = None
    keep_pool: bool = False


@dataclass(frozen=True, slots=True)
class ServiceWrite:
    """Patches taking one Service from `obs` to `want`, each carrying the resourceVersion read
    (409 on a stale read). The patch bodies are built when applied, not when decided: a burst
    of Services waiting for their writes holds a few pointers each (docs/performance.md).

    `status` is a strategic-merge patch for /status (conditions merged by type); `annotations`
    a merge patch of metadata.annotations (None values delete), sent after the status.
    """

    obs: Observed
    want: Desired
    now: datetime  # when decided: a new condition's lastTransitionTime
    ingress: bool  # status.loadBalancer.ingress changes
    condition: bool  # our condition changes
    pool: bool  # the pool annotation changes

    @property
    def key(self) -> ServiceKey:
        return self.obs.key

    @property
    def resource_version(self) -> str:
        return self.obs.resource_version

    @property
    def namespace(self) -> str:
        return self.obs.namespace

    @property
    def name(self) -> str:
        return self.obs.name

    @property
    def status(self) -> dict[str, Any] | None:
        obs, want = self.obs, self.want
        status: dict[str, Any] = {}
        if self.ingress and want.ips is not None:
            # An empty list would merge as "no change" under strategic merge: null deletes it.
            status["loadBalancer"] = {"ingress": [{"ip": str(ip)} for ip in want.ips] or None}
        if self.condition:
            if want.verdict is None:
                status["conditions"] = [conditions.removal()]
            else:
                cond = conditions.build(want.verdict, obs.condition, obs.generation, self.now)
                status["conditions"] = [cond]
        return status or None

    @property
    def annotations(self) -> dict[str, str | None] | None:
        return {ann.ALLOCATED_FROM_POOL: self.want.pool} if self.pool else None


def plan(obs: Observed, want: Desired, now: datetime) -> ServiceWrite | None:
    """The smallest write taking obs to want, or None when nothing differs."""
    ingress = want.ips is not None and (want.ips != obs.ips or (not want.ips and obs.has_ingress))
    if want.verdict is None:
        condition = obs.condition is not None
    else:
        condition = not conditions.up_to_date(obs.condition, want.verdict, obs.generation)
    pool = not want.keep_pool and want.pool != obs.pool_annotation
    if not (ingress or condition or pool):
        return None
    return ServiceWrite(obs, want, now, ingress, condition, pool)


def labels_of(body: Body) -> dict[str, str]:
    meta = body.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def created_of(body: Body) -> str:
    meta = body.get("metadata")
    value = meta.get("creationTimestamp") if isinstance(meta, Mapping) else None
    return str(value or "")


def fallback_request(obs: Observed) -> ServiceRequest:
    """A request holding exactly obs's IPs, for a Service whose annotations cannot be read."""
    families = tuple(dict.fromkeys(family_of(ip) for ip in obs.ips))
    policy = IPFamilyPolicy.REQUIRE_DUAL_STACK if len(families) > 1 else None
    return ServiceRequest(
        key=obs.key,
        families=families,
        family_policy=policy or IPFamilyPolicy.SINGLE_STACK,
        lb_class=obs.lb_class,
    )


@dataclass(frozen=True, slots=True)
class Listed:
    """A listed Service reduced to what restore() reads (Reconciler.digest): a restore holds
    10,000 of these at once, not 10,000 bodies. `req` is None for a Service not ours."""

    created: str
    obs: Observed
    req: ServiceRequest | AdaptFailure | None
