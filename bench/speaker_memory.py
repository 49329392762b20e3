"""Speaker memory per Service, without an API server: where node-1's RSS goes as it learns N
IPv6 Services and their EndpointSlices and holds every one of their IPs.

No root, no bed: `python bench/speaker_memory.py` (N=10,000; `--trace` adds a tracemalloc table
of the live objects by source line, which slows it and inflates RSS) or `--smoke` (CI: N=200).
Drives the speaker's own parts, single-threaded: the Agent (indexes, incremental L2 and BGP
plans, Shown conditions written and read back through a fake Kube), Metrics, the real
Layer2Announcer holding every IP (a fake interface view and sockets), kopf's real per-event path
(process_resource_event with the speaker's ForgetfulMemories, and kopf's default memories for
comparison). Bodies are JSON shaped as the API server sends them (managedFields, status.conditions)
and parsed per event, as kopf does. What it leaves out, and bench/l2.py's real speaker has: the
data plane thread and its Liveness, threads' allocators, the watch streams' backlog.
"""

from __future__ import annotations

# First, as lbctl-speaker starts: speaker.main loads kopf without the kubernetes client.
import speaker.main  # noqa: F401

# isort: split
import argparse
import asyncio
import gc
import json
import socket
import tempfile
import tracemalloc
import uuid
from ipaddress import IPv6Address, ip_interface
from pathlib import Path
from typing import Any

import kopf
import yaml
from kopf._cogs.structs import ephemera, references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory
from kopf._core.reactor.processing import process_resource_event

from lbctl.core.liveness_types import Verdict
from lbctl.core.model import IPAddress, NodeName
from lbctl.kopfsettings import kopf_settings
from speaker import handlers
from speaker.agent import Agent
from speaker.announcers.bgp import BGPAnnouncer
from speaker.announcers.layer2 import Interface, Layer2Announcer, Link, mac_address
from speaker.dataplane_types import Held, Plan
from speaker.metrics import Metrics

POOL = "2001:db8::1:0/112"
FIRST = int(IPv6Address("2001:db8::1:1"))
CONFIG = {"apiVersion": "lbctl.io/v1alpha1", "kind": "Config",
          "pools": [{"name": "many", "addresses": [POOL]}],
          "l2Advertisements": [{"name": "all"}]}  # fmt: skip
ALLOCATED = {"type": "lbctl.io/IPAllocated", "status": "True", "observedGeneration": 1,
             "lastTransitionTime": "2026-12-04T12:00:01Z", "reason": "IPAllocated",
             "message": "assigned from pool many"}  # fmt: skip
MANAGED = [{"manager": "python-kubernetes", "operation": "Update", "apiVersion": "v1",
            "time": "2026-12-04T12:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {".": {}}, "f:type": {}}}},
           {"manager": "lbctl-controller", "operation": "Update", "apiVersion": "v1",
            "time": "2026-12-04T12:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}}]  # fmt: skip


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def node_body(i: int) -> str:
    return json.dumps({"metadata": {"name": f"node-{i}", "uid": str(uuid.uuid4())}, "status": {
        "addresses": [{"type": "InternalIP", "address": f"192.0.2.{10 + i}"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})  # fmt: skip


def service_body(i: int, uid: str, conditions: list[dict[str, object]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": f"rss-{i}", "namespace": "default", "uid": uid, "resourceVersion": str(1000 + i),
        "creationTimestamp": "2026-12-04T12:00:00Z", "managedFields": MANAGED,
        "annotations": {"lbctl.io/ip-allocated-from-pool": "many"}},
        "spec": {"ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080}],
                 "clusterIP": f"2001:db8:5::{i:x}", "clusterIPs": [f"2001:db8:5::{i:x}"],
                 "type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                 "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"},
        "status": {"loadBalancer": {"ingress": [{"ip": str(IPv6Address(FIRST + i)),
                                                 "ipMode": "VIP"}]},
                   "conditions": conditions}})  # fmt: skip


def slice_body(i: int) -> str:
    return json.dumps({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
        "name": f"rss-{i}-bench", "namespace": "default", "uid": str(uuid.uuid4()),
        "labels": {"kubernetes.io/service-name": f"rss-{i}"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.51.100.10"], "nodeName": "node-1",
                       "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": [{"protocol": "TCP", "port": 8080}]})  # fmt: skip


class Kube:
    """Records the condition patches, which come back as Service events."""

    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, object]]] = []

    def patch_condition(self, namespace: str, name: str, body: dict[str, object]) -> None:
        self.written.append((name, json.loads(json.dumps(body))))

    def api_reachable(self) -> bool:
        return True


class Plane:
    def __init__(self) -> None:
        self.plan = Plan((), {}, {})

    def update(self, plan: Plan) -> None:
        self.plan = plan

    def cannot_carry(self) -> frozenset[IPAddress]:
        return frozenset()

    def someone_else_holds(self, key: IPAddress) -> bool:
        return False


class View:
    interfaces = (Interface(Link("eth0", 2, mac_address("02:00:00:00:01:01")),
                            (ip_interface("2001:db8::11/64"),), True),)  # fmt: skip

    def subscribe(self, on_change: Any) -> None: ...


class Socket:
    """Sends nowhere; one end of a socket pair gives the announcer a descriptor to watch."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._mine, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def fileno(self) -> int:
        return self._mine.fileno()

    def send(self, frame: bytes) -> None: ...
    def receive(self, limit: int = 256) -> list[bytes]:
        return []

    def join(self, vip: IPv6Address) -> None: ...
    def leave(self, vip: IPv6Address) -> None: ...
    def close(self) -> None:
        self._mine.close()
        self._theirs.close()


class Speaker:
    """node-1's parts; events go through kopf's per-event path into the real handlers."""

    SERVICES = references.Resource("", "v1", "services", kind="Service", namespaced=True)
    SLICES = references.Resource("discovery.k8s.io", "v1", "endpointslices",
                                 kind="EndpointSlice", namespaced=True)  # fmt: skip

    def __init__(self, memories: inventory.ResourceMemories) -> None:
        self.kube, self.plane = Kube(), Plane()
        bgp = BGPAnnouncer(Path(tempfile.mkdtemp(prefix="lbctl-memory-")))
        self.agent = Agent(NodeName("node-1"), self.kube, self.plane, Metrics(),  # type: ignore[arg-type]
                           config_ref=("lbctl-system", "lbctl-config"), bgp=bgp)  # fmt: skip
        self.announcer = Layer2Announcer(interfaces=View(), open_socket=Socket,
                                         burst_interval=3600.0, burst_span=0.0)  # fmt: skip
        self.registry = kopf.OperatorRegistry()
        handlers.register(self.registry, self.agent, lambda: kopf.ConnectionInfo(server=""))
        self.memories, self.settings = memories, kopf_settings()

    async def event(self, resource: references.Resource, type_: str, text: str) -> None:
        await process_resource_event(
            lifecycle=lifecycles.all_at_once, indexers=indexing.OperatorIndexers(),
            registry=self.registry, settings=self.settings, memories=self.memories,
            memobase=ephemera.AnyMemo(kopf.Memo()), resource=resource,
            raw_event={"type": type_, "object": json.loads(text)},  # type: ignore[typeddict-item]
            event_queue=asyncio.Queue(), no_throttling=True,
        )  # fmt: skip

    async def learn(self, n: int, uids: list[str]) -> None:
        """N Services and slices in batches of 500 (a plan after each, as a watch burst gives),
        then node-1 holds every group, writes every condition and reads it back."""
        for start in range(0, n, 500):
            for i in range(start, min(n, start + 500)):
                await self.event(self.SERVICES, "ADDED", service_body(i, uids[i], [ALLOCATED]))
                await self.event(self.SLICES, "ADDED", slice_body(i))
            await self.agent.replan()
        held = {g.key: Held(g.key, g.ips, "eth0", Verdict.OWNER) for g in self.plane.plan.groups}
        self.agent._held_changed(held, None)
        self.announcer.sync({ip: "eth0" for h in held.values() for ip in h.ips})
        await self.agent._write_conditions()
        for name, condition in self.kube.written:
            i = int(name.removeprefix("rss-"))
            body = service_body(i, uids[i], [ALLOCATED, condition])
            await self.event(self.SERVICES, "MODIFIED", body)
        self.kube.written.clear()
        await self.agent.replan()
        await self.agent._write_conditions()


async def measure(n: int, memories: inventory.ResourceMemories, trace: bool) -> tuple[float, float]:
    """MiB of RSS with the speaker's parts built and no Service, and KiB more per Service (and
    the tracemalloc table when `trace`)."""
    me = Speaker(memories)
    await me.announcer.start()
    await me.event(references.Resource("", "v1", "configmaps", kind="ConfigMap",
                                       namespaced=True), "ADDED", json.dumps({
        "metadata": {"namespace": "lbctl-system", "name": "lbctl-config"},
        "data": {"config.yaml": yaml.safe_dump(CONFIG)}}))  # fmt: skip
    for i in (1, 2, 3):
        me.agent.on_node("ADDED", json.loads(node_body(i)))
    await me.agent.replan()
    uids = [str(uuid.uuid4()) for _ in range(n)]
    gc.collect()
    ready, snapshot = rss_mib(), tracemalloc.take_snapshot() if trace else None
    await me.learn(n, uids)
    gc.collect()
    per_service = (rss_mib() - ready) * 1024 / n
    if snapshot is not None:
        skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = (
            tracemalloc.take_snapshot()
            .filter_traces(skip)
            .compare_to(snapshot.filter_traces(skip), "lineno")
        )
        print(f"# live objects: {sum(d.size_diff for d in diff) / n:.0f} B per Service, by line:")
        for d in diff[:25]:
            where = d.traceback[0]
            path = where.filename.split("/site-packages/")[-1].split("/work/main/")[-1]
            size, count = d.size_diff / n, d.count_diff / n
            print(f"#   {size:6.0f} B {count:5.2f} objects  {path}:{where.lineno}")
    assert len(me.agent.held) == n, f"holds {len(me.agent.held)} of {n} groups"
    await me.announcer.stop()
    return ready, per_service


def kopf_records(n: int) -> float:
    """Bytes per object that kopf's default ResourceMemories keeps (the speaker keeps none)."""

    async def recall() -> float:
        memories, base = inventory.ResourceMemories(), ephemera.AnyMemo(kopf.Memo())
        bodies = [{"metadata": {"uid": str(uuid.uuid4())}} for _ in range(n)]
        tracemalloc.start()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            await memories.recall(body, memobase=base)  # type: ignore[arg-type]
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used / n

    return asyncio.run(recall())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI: 200 Services")
    parser.add_argument("-n", type=int, default=10_000, help="Services (default 10,000)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc table (slower)")
    args = parser.parse_args()
    n = 200 if args.smoke else args.n
    if args.trace:
        tracemalloc.start()
    ready, per_service = asyncio.run(measure(n, handlers.ForgetfulMemories(), args.trace))
    growth = per_service * n / 1024
    print(f"| ready, no Service (imports and parts, in process) | {ready:.1f} MiB | |")
    print(f"| speaker control state, {n} Services held, RSS growth | {per_service:.2f} KiB per "
          f"Service ({growth:.1f} MiB) | <= 28.6 MiB at 10,000 |")  # fmt: skip
    print(f"| total (ready + growth) | {ready + growth:.1f} MiB | <= 143.1 MiB |")
    if not args.trace:
        print(
            f"| kopf's default per-object record (not kept by the speaker) | "
            f"{kopf_records(min(n, 5000)):.0f} B per object, 2 objects per Service | |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
