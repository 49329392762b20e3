"""What the speaker keeps per Service (docs/performance.md, "Speaker RSS"): kopf keeps no record
per watched object, and a condition is kept as Shown yet still compares equal to what the
speaker wrote once it comes back in a watch event."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import ephemera, references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory
from kopf._core.reactor.processing import process_resource_event
from speaker_fakes import DataPlane, Kube

from lbctl.core.condition import Shown
from lbctl.core.liveness_types import Verdict
from lbctl.core.model import NodeName, service_key
from lbctl.kopfsettings import kopf_settings
from speaker import handlers
from speaker.agent import Agent
from speaker.dataplane_types import Held
from speaker.metrics import Metrics

SERVICES = references.Resource(
    "", "v1", "services", kind="Service", namespaced=True, verbs=frozenset({"list", "watch"})
)
CONFIG = "apiVersion: lbctl.io/v1alpha1\nkind: Config\npools:\n- name: p\n  addresses: "
CONFIG += '["192.0.2.200/29"]\nl2Advertisements:\n- name: l2\n'


class Events:
    """Stands for the agent: counts what the handlers hand over."""

    config_ref = ("lbctl-system", "lbctl-config")

    def __init__(self) -> None:
        self.services: list[str | None] = []

    def on_service(self, event: str | None, body: Any) -> None:
        self.services.append(event)


def service(uid: str, *, conditions: list[dict[str, object]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": "web", "uid": uid, "generation": 1},
        "spec": {"type": "LoadBalancer"},
        "status": {
            "loadBalancer": {"ingress": [{"ip": "192.0.2.201"}]},
            "conditions": conditions or [],
        },
    }


async def through_kopf(memories: inventory.ResourceMemories, events: Events) -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, events, lambda: kopf.ConnectionInfo(server="https://x"))  # type: ignore[arg-type]
    for type_ in ("ADDED", "MODIFIED"):
        await process_resource_event(
            lifecycle=lifecycles.all_at_once,
            indexers=indexing.OperatorIndexers(),
            registry=registry,
            settings=kopf_settings(),
            memories=memories,
            memobase=ephemera.AnyMemo(kopf.Memo()),
            resource=SERVICES,
            raw_event={"type": type_, "object": service("u-1")},  # type: ignore[typeddict-item]
            event_queue=asyncio.Queue(),
            no_throttling=True,
        )


@pytest.mark.parametrize(
    ("memories", "kept"),
    [
        pytest.param(handlers.ForgetfulMemories, 0, id="speaker-keeps-none"),
        pytest.param(inventory.ResourceMemories, 1, id="kopf-default-keeps-one-per-object"),
    ],
)
def test_kopf_keeps_no_record_per_object_yet_every_event_reaches_the_agent(
    memories: type[inventory.ResourceMemories], kept: int
) -> None:
    events, memory = Events(), memories()
    asyncio.run(through_kopf(memory, events))
    assert events.services == ["ADDED", "MODIFIED"]
    assert len(list(memory.iter_all_memories())) == kept


def test_a_condition_read_back_from_the_watch_is_not_written_again() -> None:
    kube, plane = Kube(), DataPlane()
    me = Agent(NodeName("node-1"), kube, plane, Metrics(),  # type: ignore[arg-type]
               config_ref=("lbctl-system", "lbctl-config"))  # fmt: skip
    me.on_config("ADDED", {"data": {"config.yaml": CONFIG}})
    me.on_node("ADDED", {"metadata": {"name": "node-1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "192.0.2.11"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})  # fmt: skip
    me.on_service("ADDED", service("u-1"))
    labels = {"kubernetes.io/service-name": "web"}
    endpoint = {"addresses": ["198.51.100.2"], "nodeName": "node-1"}
    meta = {"namespace": "default", "name": "web-x", "labels": labels}
    me.on_slice("ADDED", {"metadata": meta, "endpoints": [endpoint]})

    async def run() -> None:
        await me.replan()
        (group,) = plane.plan.groups
        me.held = {group.key: Held(group.key, group.ips, "eth0", Verdict.OWNER)}
        await me._write_conditions()
        (written,) = kube.patches
        assert me.services[service_key("default", "web")].condition == Shown.of(written)
        # the patch comes back as a Service event, through JSON, as the API server sends it
        me.on_service("MODIFIED", json.loads(json.dumps(service("u-1", conditions=[written]))))
        await me._write_conditions()
        assert kube.patches == [written]

    asyncio.run(run())


def announced_series(metrics: Metrics) -> set[str]:
    text = metrics.render().decode()
    return {line for line in text.splitlines() if line.startswith("lbctl_l2_announced{")}


def test_announced_series_are_exactly_what_the_node_holds_now() -> None:
    """Made at scrape time: one series per IP held, none left once the IP goes, and the
    ownership changes counted per IP that came or went."""
    a, b, c = (ipaddress.ip_address(f"2001:db8::1:{i}") for i in (1, 2, 3))
    metrics = Metrics()
    metrics.set_announced("node-1", {a: Held(a, (a, b), "eth0", Verdict.OWNER)})
    assert announced_series(metrics) == {
        'lbctl_l2_announced{interface="eth0",ip="2001:db8::1:1"} 1.0',
        'lbctl_l2_announced{interface="eth0",ip="2001:db8::1:2"} 1.0',
    }
    metrics.set_announced("node-1", {c: Held(c, (c,), "eth1", Verdict.TOOK_OVER)})
    assert announced_series(metrics) == {
        'lbctl_l2_announced{interface="eth1",ip="2001:db8::1:3"} 1.0'
    }
    metrics.set_announced("node-1", {})
    assert announced_series(metrics) == set()
    assert metrics.registry.get_sample_value("lbctl_l2_ownership_changes_total") == 2 + 3 + 1
