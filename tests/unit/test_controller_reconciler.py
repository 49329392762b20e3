"""The reconciler without an API: bodies in, writes out; a tiny fake applies the writes."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

import pytest

from controller.events import EventReason, EventType
from controller.observed import ServiceWrite
from controller.reconciler import Decisions, Reconciler
from lbctl.core.adapt import key_of
from lbctl.core.model import ServiceKey
from lbctl.core.reasons import AllocFailure, AllocSuccess

REF = ("lbctl-system", "lbctl-config")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOLS = """\
apiVersion: lbctl.io/v1alpha1
kind: Config
pools:
- name: public
  addresses: ["192.0.2.1-192.0.2.2"]
- name: scoped
  addresses: ["203.0.113.8/30"]
  serviceAllocation:
    namespaceSelectors:
    - matchLabels: {team: blue}
"""
_rv = itertools.count(100)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def configmap(text: str = POOLS) -> dict[str, Any]:
    meta = {"namespace": REF[0], "name": REF[1], "uid": "cm-uid"}
    return {"metadata": meta, "data": {"config.yaml": text}}


def svc(
    name: str,
    *,
    ns: str = "default",
    annotations: dict[str, str] | None = None,
    ips: tuple[str, ...] = (),
    type_: str = "LoadBalancer",
    lb_class: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "ports": [{"port": 80, "protocol": "TCP"}]}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    status: dict[str, Any] = {"loadBalancer": {}}
    if ips:
        status["loadBalancer"]["ingress"] = [{"ip": ip} for ip in ips]
    meta = {
        "name": name,
        "namespace": ns,
        "uid": f"uid-{name}",
        "resourceVersion": str(next(_rv)),
        "generation": 1,
        "creationTimestamp": created,
        "annotations": annotations or {},
    }
    return {"metadata": meta, "spec": spec, "status": status}


def apply(body: dict[str, Any], write: ServiceWrite) -> dict[str, Any]:
    """What the API server does with our patches (for the shapes the controller sends)."""
    return patched(body, write.resource_version, write.status, write.annotations)


def patched(
    body: dict[str, Any],
    rv: str,
    status: dict[str, Any] | None,
    annotations: dict[str, str | None] | None,
) -> dict[str, Any]:
    assert rv == body["metadata"]["resourceVersion"], "stale write"
    new = copy.deepcopy(body)
    if status is not None:
        lb = status.get("loadBalancer")
        if lb is not None:
            ingress = lb.get("ingress")
            new["status"]["loadBalancer"] = {"ingress": ingress} if ingress else {}
        for cond in status.get("conditions", []):
            kept = [c for c in new["status"].get("conditions", []) if c["type"] != cond["type"]]
            new["status"]["conditions"] = kept + ([] if "$patch" in cond else [cond])
    for key, value in (annotations or {}).items():
        if value is None:
            new["metadata"]["annotations"].pop(key, None)
        else:
            new["metadata"]["annotations"][key] = value
    new["metadata"]["resourceVersion"] = str(next(_rv))
    return new


class World:
    """Services as the API holds them; `take` applies writes and feeds bodies back.

    With `defer`, Services are decided as the controller does (Reconciler.on_service with
    defer=True, each named Service then settled): every World test runs both ways and must
    see the same writes and Events.
    """

    def __init__(self, rec: Reconciler, defer: bool = False) -> None:
        self.rec = rec
        self.defer = defer
        self.bodies: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (object, reason, type)

    def on_service(self, body: dict[str, Any]) -> Decisions:
        return self.resolved(self.rec.on_service(body, defer=self.defer))

    def resolved(self, decisions: Decisions) -> Decisions:
        """The settle keys turned into their writes and Events, as the controller's writer does."""
        out = Decisions(list(decisions.services), list(decisions.events))
        for key in decisions.settle:
            out += self.rec.settle(key)
        return out

    def take(self, decisions: Decisions) -> None:
        decisions = self.resolved(decisions)
        pending = list(decisions.services)
        self.events += [(e.ref.name, e.reason.value, e.type.value) for e in decisions.events]
        for _ in range(100):
            if not pending:
                return
            write = pending.pop(0)
            body = apply(self.bodies[write.key], write)
            self.bodies[write.key] = body
            more = self.on_service(body)  # the watch echoes our write
            self.events += [(e.ref.name, e.reason.value, e.type.value) for e in more.events]
            pending += more.services
        raise AssertionError("writes never settle")

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        self.bodies[key] = body
        self.take(self.rec.on_service(body, defer=self.defer))
        return self.bodies[key]

    def ips(self, key: str) -> list[str]:
        ingress = self.bodies[key]["status"].get("loadBalancer", {}).get("ingress") or []
        return [e["ip"] for e in ingress]

    def condition(self, key: str) -> dict[str, Any] | None:
        conds = self.bodies[key]["status"].get("conditions", [])
        return next((c for c in conds if c["type"] == "lbctl.io/IPAllocated"), None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rec(clock: Clock) -> Reconciler:
    r = Reconciler(REF, clock=clock)
    r.on_config(configmap())
    return r


@pytest.fixture(params=[False, True], ids=["eager", "deferred"])
def world(rec: Reconciler, request: pytest.FixtureRequest) -> World:
    return World(rec, defer=request.param)


def test_new_service_gets_ingress_condition_annotation_and_one_event(rec: Reconciler) -> None:
    body = svc("web")
    out = rec.on_service(body)
    [write] = out.services
    assert write.resource_version == body["metadata"]["resourceVersion"]
    assert write.status is not None
    assert write.status["loadBalancer"] == {"ingress": [{"ip": "192.0.2.1"}]}
    assert write.status["conditions"] == [
        {
            "type": "lbctl.io/IPAllocated",
            "status": "True",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "reason": "Allocated",
            "message": "assigned 192.0.2.1 from pool public",
        }
    ]
    assert write.annotations == {"lbctl.io/ip-allocated-from-pool": "public"}
    [event] = out.events
    assert (event.reason, event.type) == (EventReason.IP_ALLOCATED, EventType.NORMAL)
    assert event.ref.uid == "uid-web"


def test_body_showing_the_desired_state_needs_no_write(world: World) -> None:
    body = world.add(svc("web"))
    assert not world.on_service(body)
    assert not world.on_service(body)


def test_pending_service_through_20_resyncs_gets_one_event(world: World) -> None:
    world.add(svc("a"))
    world.add(svc("b"))
    body = world.add(svc("c"))
    for _ in range(20):
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(next(_rv))
        world.take(world.on_service(body))
    assert [e for e in world.events if e[0] == "c"] == [("c", "PoolExhausted", "Warning")]
    cond = world.condition("default/c")
    assert cond is not None
    assert (cond["status"], cond["message"]) == ("False", "pool public is full: 2/2 used")


def test_delete_wakes_the_oldest_pending_service_with_its_last_seen_version(world: World) -> None:
    a = world.add(svc("a"))
    world.add(svc("b"))
    world.add(svc("c", created="2026-01-01T00:00:01Z"))
    world.add(svc("d", created="2026-01-01T00:00:02Z"))
    out = world.rec.on_service_deleted(a)
    [write] = out.services
    assert write.key == "default/c"
    assert write.resource_version == world.bodies["default/c"]["metadata"]["resourceVersion"]
    world.take(out)
    assert world.ips("default/c") == ["192.0.2.1"]
    assert world.ips("default/d") == []


def test_transition_time_moves_only_when_status_flips(world: World, clock: Clock) -> None:
    world.add(svc("a"))
    world.add(svc("b"))
    world.add(svc("c"))
    pending_since = world.condition("default/c")["lastTransitionTime"]  # type: ignore[index]
    clock.now = T0 + timedelta(minutes=5)
    world.take(world.rec.on_config(configmap(POOLS.replace(".1-192.0.2.2", ".1-192.0.2.3"))))
    cond = world.condition("default/c")
    assert cond is not None
    assert cond["status"] == "True"
    assert cond["lastTransitionTime"] == "2026-01-01T00:05:00Z" != pending_since


def test_restore_keeps_held_ips_and_writes_nothing_when_all_is_current(world: World) -> None:
    body = world.add(svc("web"))
    fresh = Reconciler(REF)
    out = fresh.restore(configmap=configmap(), namespaces=[], services=[body])
    assert out.services == []
    assert fresh.held(ServiceKey("default/web"))[0].exploded == "192.0.2.1"


def test_restore_adopts_foreign_ips_before_allocating_newcomers(rec: Reconciler) -> None:
    fresh = Reconciler(REF)
    held = svc("old", ips=("192.0.2.1",), created="2026-01-02T00:00:00Z")
    held["metadata"]["annotations"]["metallb.universe.tf/ip-allocated-from-pool"] = "public"
    newcomer = svc("new", created="2026-01-01T00:00:00Z")  # older, but listed first must not win
    out = fresh.restore(configmap=configmap(), namespaces=[], services=[newcomer, held])
    by_key = {w.key: w for w in out.services}
    assert "loadBalancer" not in (by_key[ServiceKey("default/old")].status or {})
    assert by_key[ServiceKey("default/new")].status["loadBalancer"] == {  # type: ignore[index]
        "ingress": [{"ip": "192.0.2.2"}]
    }


def test_stale_body_after_a_release_does_not_readopt_the_ip(world: World) -> None:
    body = world.add(svc("web"))
    world.add(svc("b"))
    world.add(svc("waiting", created="2026-01-01T00:00:05Z"))
    changed = copy.deepcopy(body)
    changed["metadata"]["annotations"]["lbctl.io/address-pool"] = "nowhere"
    changed["metadata"]["resourceVersion"] = str(next(_rv))
    world.bodies["default/web"] = changed
    world.take(world.on_service(changed))  # UnknownPool: 192.0.2.1 goes to "waiting"
    assert world.ips("default/waiting") == ["192.0.2.1"]
    world.on_service(body)  # an old body still showing the IP arrives (say, after a 409)
    holders = world.rec.allocator.holders(world.rec.held(ServiceKey("default/waiting"))[0])
    assert holders == ("default/waiting",)


def test_type_change_clears_ingress_condition_and_annotation(world: World) -> None:
    body = world.add(svc("web"))
    body = copy.deepcopy(body)
    body["spec"]["type"] = "ClusterIP"
    body["metadata"]["resourceVersion"] = str(next(_rv))
    world.bodies["default/web"] = body
    world.take(world.on_service(body))
    assert world.ips("default/web") == []
    assert world.condition("default/web") is None
    assert (
        "lbctl.io/ip-allocated-from-pool"
        not in world.bodies["default/web"]["metadata"]["annotations"]
    )
    assert ("web", "IPReleased", "Normal") in world.events


def test_service_of_another_class_is_never_written(world: World) -> None:
    out = world.on_service(svc("theirs", lb_class="example.com/other"))
    assert not out


def test_class_change_releases_and_says_why(world: World) -> None:
    body = copy.deepcopy(world.add(svc("web")))
    body["spec"]["loadBalancerClass"] = "example.com/other"
    body["metadata"]["resourceVersion"] = str(next(_rv))
    world.bodies["default/web"] = body
    world.take(world.on_service(body))
    assert world.ips("default/web") == []
    assert world.condition("default/web")["reason"] == "ClassMismatch"  # type: ignore[index]
    assert world.rec.held(ServiceKey("default/web")) == ()


def test_malformed_annotation_on_holder_keeps_ips(world: World) -> None:
    body = copy.deepcopy(world.add(svc("web")))
    body["metadata"]["annotations"]["lbctl.io/loadBalancerIPs"] = "nonsense"
    body["metadata"]["resourceVersion"] = str(next(_rv))
    world.bodies["default/web"] = body
    world.take(world.on_service(body))
    assert world.ips("default/web") == ["192.0.2.1"]
    cond = world.condition("default/web")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("True", AllocSuccess.ANNOTATION_IGNORED)


def test_invalid_config_keeps_last_good_and_is_reported_once(world: World) -> None:
    world.add(svc("web"))
    bad = configmap("pools: [")
    out = world.rec.on_config(bad)
    assert [(e.ref.kind, e.reason) for e in out.events] == [
        ("ConfigMap", EventReason.CONFIG_INVALID)
    ]
    assert world.rec.config.stale and world.rec.config.loaded
    assert not world.rec.on_config(bad)  # the same content again: nothing new to say
    world.add(svc("next"))
    assert world.ips("default/next") == ["192.0.2.2"]


def test_renumbering_config_is_rejected(world: World) -> None:
    world.add(svc("web"))
    out = world.rec.on_config(configmap(POOLS.replace("192.0.2.1-192.0.2.2", "192.0.2.5")))
    [event] = out.events
    assert event.reason is EventReason.CONFIG_REJECTED
    assert "default/web (192.0.2.1)" in event.message
    assert world.rec.config.stale
    assert world.rec.allocator.config.pool("public") is not None
    assert world.rec.held(ServiceKey("default/web"))[0].exploded == "192.0.2.1"


def test_without_config_ips_are_kept_and_pending_say_config_invalid() -> None:
    rec = Reconciler(REF)
    world = World(rec)
    held = svc("old", ips=("192.0.2.1",))
    world.bodies["default/old"] = held
    world.bodies["default/new"] = svc("new")
    world.take(rec.restore(configmap=None, namespaces=[], services=list(world.bodies.values())))
    assert world.ips("default/old") == ["192.0.2.1"]
    cond = world.condition("default/new")
    assert cond is not None
    assert cond["reason"] == "ConfigInvalid"
    assert "configmap lbctl-system/lbctl-config not found" in cond["message"]
    world.take(rec.on_config(configmap()))
    assert world.ips("default/new") == ["192.0.2.2"]
    assert world.ips("default/old") == ["192.0.2.1"]


def test_namespace_labels_retry_pending_services(world: World) -> None:
    wants = {"lbctl.io/address-pool": "scoped"}
    world.add(svc("web", ns="blue", annotations=wants))
    assert world.condition("blue/web")["status"] == "False"  # type: ignore[index]
    ns = {"metadata": {"name": "blue", "labels": {"team": "blue"}}}
    world.take(world.rec.on_namespace(ns))
    assert world.ips("blue/web") == ["203.0.113.8"]


def test_half_written_echo_is_skipped(world: World) -> None:
    body = svc("web")
    world.bodies["default/web"] = body
    [write] = world.on_service(body).services
    half = patched(body, write.resource_version, write.status, None)
    full = patched(half, half["metadata"]["resourceVersion"], None, write.annotations)
    world.rec.observe(full, half["metadata"]["resourceVersion"])
    assert not world.on_service(half)
    assert not world.on_service(full)


@pytest.mark.parametrize("reason", list(AllocFailure), ids=lambda r: r.value)
def test_every_allocation_failure_has_an_event_reason(reason: AllocFailure) -> None:
    assert EventReason.for_failure(reason).value == reason.value


def test_lb_class_flag_handles_exactly_that_class() -> None:
    rec = Reconciler(REF, lb_class="example.com/lb")
    rec.on_config(configmap())
    assert not rec.on_service(svc("classless"))
    assert not rec.on_service(svc("other", lb_class="example.com/other"))
    [write] = rec.on_service(svc("ours", lb_class="example.com/lb")).services
    assert write.key == "default/ours"


def test_restore_from_digests_decides_as_from_bodies() -> None:
    """The controller restores from Reconciler.digest records (the listed bodies are not kept)."""
    blue = {"metadata": {"name": "blue", "labels": {"team": "blue"}}}
    bodies = [
        svc("held", ips=("192.0.2.2",), created="2026-01-01T00:00:01Z"),
        svc("new", created="2026-01-01T00:00:02Z"),
        svc("scoped", ns="blue", annotations={"lbctl.io/address-pool": "scoped"}),
        svc("plain", type_="ClusterIP"),
        svc("theirs", lb_class="example.com/other", ips=("203.0.113.9",)),
        svc("bad", annotations={"lbctl.io/address-pool": ""}, ips=("192.0.2.1",)),
    ]
    outcomes = []
    for digested in (False, True):
        rec = Reconciler(REF, clock=Clock())
        listed: list[Any] = bodies
        if digested:
            rec.load_namespaces([blue])
            listed = [rec.digest(b) for b in bodies]
        out = rec.restore(configmap=configmap(), namespaces=[blue], services=listed)
        writes = [(w.key, w.status, w.annotations) for w in out.services]
        events = [(e.ref.name, e.reason) for e in out.events]
        held = {b["metadata"]["name"]: rec.held(key_of(b)) for b in bodies}
        outcomes.append((writes, events, held))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2]["held"] == (ip_address("192.0.2.2"),)
