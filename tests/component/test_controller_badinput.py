"""Bad input through the API: each gives its condition or Event, and no IP is lost."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from controller_bed import (
    Bed,
    bed,
    controller,
    lbctl_config,
    metric,
    scrape,
    wait_for,
    wait_quiet,
)

from controller.testing import ControllerThread
from lbctl.lab.controlplane import ControlPlane

POOLS = """\
- name: public
  addresses: ["192.0.2.0/28"]
- name: tiny
  addresses: ["192.0.2.64/31"]
  autoAssign: false
- name: edge
  addresses: ["192.0.2.80/31"]
  autoAssign: false
"""
WIDER = POOLS.replace("192.0.2.0/28", "192.0.2.0/27")


@dataclass
class World:
    bed: Bed
    ctl: ControllerThread

    @property
    def port(self) -> int:
        return self.ctl.controller.health.port

    def stale(self) -> float | None:
        return metric(self.port, "lbctl_config_stale ")

    def config_events(self, reason: str) -> list[dict[str, object]]:
        events = self.bed.events(*self.bed.config_map)
        return [e for e in events if e["reason"] == reason]


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with bed(control_plane, tmp_path_factory.mktemp("bad")) as b:
        b.set_config(lbctl_config(POOLS))
        with controller(b) as ctl:
            yield World(b, ctl)


def test_malformed_annotation_on_new_service_says_why(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("malformed")
    b.service(ns, "bad", annotations={"lbctl.io/loadBalancerIPs": "not-an-ip"})
    cond = b.wait_condition(ns, "bad", "InvalidAnnotation")
    assert cond["status"] == "False"
    assert '"not-an-ip" is not an IP address' in cond["message"]
    events = wait_for(lambda: b.events(ns, "bad"), 5, "an Event on bad")
    assert [(e["reason"], e["type"]) for e in events] == [("InvalidAnnotation", "Warning")]


def test_malformed_annotation_on_assigned_service_keeps_its_ip(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("malformed-later")
    b.service(ns, "svc")
    [ip] = b.wait_ips(ns, "svc")
    b.patch(
        ns,
        "svc",
        {
            "metadata": {
                "annotations": {"lbctl.io/address-pool": "a", "metallb.io/address-pool": "b"}
            }
        },
    )
    cond = b.wait_condition(ns, "svc", "AnnotationIgnored")  # a success: it keeps its IP
    assert cond["status"] == "True"
    assert cond["message"].startswith(f"kept {ip}; annotations not applied: ")
    assert b.ips(ns, "svc") == [ip]


def test_pending_service_through_20_resyncs_gets_one_event_per_reason(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("dedup")
    tiny = {"lbctl.io/address-pool": "tiny"}
    for name in ("a", "b", "waiting"):
        b.service(ns, name, annotations=tiny)
    b.wait_condition(ns, "waiting", "PoolExhausted")
    for i in range(20):
        body = b.patch(ns, "waiting", {"metadata": {"labels": {"resync": str(i)}}})
    last_rv = body["metadata"]["resourceVersion"]

    def all_seen() -> bool:
        seen = world.ctl.controller.reconciler.seen  # the 20th change was decided upon
        obs = seen(f"{ns}/waiting")  # type: ignore[arg-type]
        return obs is not None and obs.resource_version == last_rv

    wait_for(all_seen, 5, "the last resync")
    reasons = [e["reason"] for e in b.events(ns, "waiting")]
    assert reasons == ["PoolExhausted"]


def test_invalid_config_edit_is_reported_and_last_good_stays(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("bad-config")
    b.service(ns, "before")
    [ip] = b.wait_ips(ns, "before")
    b.set_config(lbctl_config('- name: broken\n  addresses: ["192.0.2.9-192.0.2.1"]\n'))
    events = wait_for(lambda: world.config_events("ConfigInvalid"), 5, "ConfigInvalid Event")
    assert "start after end" in str(events[0]["message"])
    assert events[0]["type"] == "Warning"
    assert wait_for(lambda: world.stale() == 1.0, 5, "lbctl_config_stale 1")
    b.service(ns, "during")  # the last good config still assigns
    assert b.wait_ips(ns, "during")
    assert b.ips(ns, "before") == [ip]
    b.set_config(lbctl_config(POOLS))
    wait_for(lambda: world.stale() == 0.0, 5, "lbctl_config_stale 0")


def test_renumbering_edit_is_rejected_and_ips_stay(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("renumber")
    b.service(ns, "held", annotations={"lbctl.io/address-pool": "edge"})
    [ip] = b.wait_ips(ns, "held")
    without_edge = POOLS.split("- name: edge", maxsplit=1)[0]
    b.set_config(lbctl_config(without_edge))
    events = wait_for(lambda: world.config_events("ConfigRejected"), 5, "ConfigRejected Event")
    assert f"{ns}/held ({ip})" in str(events[0]["message"])
    assert wait_for(lambda: world.stale() == 1.0, 5, "lbctl_config_stale 1")
    assert b.ips(ns, "held") == [ip]
    assert metric(world.port, 'lbctl_pool_size{family="IPv4",pool="edge"}') == 2.0
    b.set_config(lbctl_config(WIDER))  # a good edit clears the staleness
    wait_for(lambda: world.stale() == 0.0, 5, "lbctl_config_stale 0")
    assert b.ips(ns, "held") == [ip]


def test_configmap_deleted_keeps_last_good_config(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("cm-deleted")
    b.service(ns, "before")
    [ip] = b.wait_ips(ns, "before")
    b.core.delete_namespaced_config_map(b.config_name, b.config_ns)
    events = wait_for(lambda: world.config_events("ConfigMissing"), 5, "ConfigMissing Event")
    assert "last good config kept" in str(events[0]["message"])
    assert wait_for(lambda: world.stale() == 1.0, 5, "lbctl_config_stale 1")
    b.service(ns, "after")
    assert b.wait_ips(ns, "after")
    assert b.ips(ns, "before") == [ip]
    b.set_config(lbctl_config(WIDER))
    wait_for(lambda: world.stale() == 0.0, 5, "lbctl_config_stale 0")


def test_probes_answer(world: World) -> None:
    # The edits of the test before make it rewrite every Service; on the real API server that
    # takes a moment longer than on the embedded one: "at rest" must be waited for.
    wait_quiet(world.bed, "controller")
    assert scrape(world.port, "/livez")[0] == 200
    assert scrape(world.port, "/readyz")[0] == 200
    assert metric(world.port, "lbctl_config_loaded ") == 1.0
    assert metric(world.port, "lbctl_leader ") == 1.0
    assert metric(world.port, "lbctl_writes_queued ") == 0.0  # nothing left to write at rest
    assert metric(world.port, "lbctl_writes_retrying ") == 0.0


def test_failed_writes_are_retried_until_they_land(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("flaky")
    b.proxy.faults.error(
        status=500, count=3, identity="controller", verb="patch", path=f"/api/v1/namespaces/{ns}/"
    )
    b.service(ns, "svc")
    assert b.wait_ips(ns, "svc", timeout=10)
    assert len(_answers(b, ns, 500)) == 3
    assert b.wait_condition(ns, "svc", "Allocated")
    assert b.wait_pool(ns, "svc") == "public"


def test_conflicting_write_is_decided_again_on_a_fresh_read(world: World) -> None:
    b, ns = world.bed, world.bed.namespace("conflict")
    b.proxy.faults.error(
        status=409, count=1, identity="controller", verb="patch", path=f"/api/v1/namespaces/{ns}/"
    )
    b.service(ns, "svc")
    assert b.wait_ips(ns, "svc")
    assert len(_answers(b, ns, 409)) == 1
    gets = [
        r
        for r in b.proxy.requests(identity="controller")
        if r.verb == "get" and r.path.endswith(f"/{ns}/services/svc")
    ]
    assert gets  # the 409 made it read the Service again


def _answers(b: Bed, ns: str, status: int) -> list[str]:
    """Paths of the controller's patches in ns that were answered with status."""
    records = b.proxy.requests(identity="controller")
    return [
        r.path for r in records if r.verb == "patch" and f"/{ns}/" in r.path and r.status == status
    ]
