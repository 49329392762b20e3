"""One reconcile pass of the lab kubelet: Nodes, Deployment pods, backends, pod and Deployment
status, EndpointSlices and node proxies, all from fresh lists; used by kubelet.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from lbctl.lab import plan
from lbctl.lab import workloads as wl
from lbctl.lab.kubeapi import KubeApi, collection
from lbctl.lab.podrunner import Backend, PodKey, PodRunner, PodStartError
from lbctl.lab.proxy import Frontend, NodeProxy, Upstream
from lbctl.lab.topology import NodeMember, Topology

log = logging.getLogger(__name__)
Body = dict[str, Any]
NODES = collection("v1", "nodes")
PODS = collection("v1", "pods")
SERVICES = collection("v1", "services")
DEPLOYMENTS = collection("apps/v1", "deployments")
SLICES = collection("discovery.k8s.io/v1", "endpointslices")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path(kind_path: str, body: Mapping[str, Any]) -> str:
    """Object URL from a collection URL like /api/v1/pods and the object's namespace/name."""
    ns, name = wl.key_of(body)
    if not ns:
        return f"{kind_path}/{name}"
    root, plural = kind_path.rsplit("/", 1)
    return f"{root}/namespaces/{ns}/{plural}/{name}"


class KubeletSync:
    """Level-based: each pass lists what it needs and writes only differences."""

    def __init__(
        self,
        api: KubeApi,
        topology: Topology,
        node_labels: Mapping[str, Mapping[str, str]],
        *,
        on_change: Callable[[], None],
    ) -> None:
        self.api = api
        self.nodes: dict[str, NodeMember] = {n.name: n for n in topology.nodes}
        self.node_labels = node_labels
        self.node_ready = dict.fromkeys(self.nodes, True)
        self.runner = PodRunner(
            record_pid=topology.record_pid,
            forget_pid=topology.forget_pid,
            log_dir=topology.run_dir / "logs",
            on_change=on_change,
        )
        self.proxies = {n.name: NodeProxy(n.netns, n.name) for n in topology.nodes}

    async def run_pass(self) -> None:
        nodes = await self._sync_nodes()
        deployments = await self.api.list(DEPLOYMENTS)
        pods = await self.api.list(PODS)
        if await self._sync_deployments(deployments, pods, nodes):
            pods = await self.api.list(PODS)
        endpoints = await self._sync_pods(pods)
        await self._sync_deployment_status(deployments, pods, endpoints)
        services = await self.api.list(SERVICES)
        await self._sync_slices(services, endpoints)
        await self._sync_proxies(services, endpoints)

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.proxies.values()), return_exceptions=True)
        await self.runner.close()

    # -- nodes -------------------------------------------------------------------------------

    async def _sync_nodes(self) -> dict[str, Body]:
        found = {wl.key_of(n)[1]: n for n in await self.api.list(NODES)}
        out: dict[str, Body] = {}
        for name, member in self.nodes.items():
            node = found.get(name)
            if node is None:
                node = await self.api.create(NODES, self._node_body(member))
            out[name] = await self._sync_node(node, self.node_ready[name])
        return out

    def _node_body(self, member: NodeMember) -> Body:
        body = wl.node_body(
            member.name,
            [str(member.host.addr4), str(member.host.addr6)],
            self.node_labels.get(member.name, {}),
            str(plan.pod_network(member.index)),
            now(),
        )
        body["status"]["conditions"] = [wl.node_condition(self.node_ready[member.name], now())]
        return body

    async def _sync_node(self, node: Body, ready: bool) -> Body:
        path = _path(NODES, node)
        if wl.node_ready(node) != ready:
            conditions = [
                c
                for c in (node.get("status") or {}).get("conditions") or []
                if c["type"] != "Ready"
            ]
            patch = {"status": {"conditions": [*conditions, wl.node_condition(ready, now())]}}
            node = await self.api.patch(f"{path}/status", patch)
        current = (node.get("spec") or {}).get("taints") or []
        taints = wl.node_taints(current, ready)
        if taints != current:
            node = await self.api.patch(path, {"spec": {"taints": taints or None}})
        return node

    # -- deployments and pods ------------------------------------------------------------------

    async def _sync_deployments(
        self, deployments: Sequence[Body], pods: Sequence[Body], nodes: Mapping[str, Body]
    ) -> bool:
        """Create or delete pods so each Deployment has its replicas; True if anything changed."""
        changed = False
        ready_nodes = sorted(n for n, body in nodes.items() if wl.schedulable(body))
        names = {wl.key_of(d) for d in deployments}
        for pod in pods:
            owner = wl.owner_deployment(pod)
            if owner is not None and (wl.key_of(pod)[0], owner) not in names:
                await self.api.delete(_path(PODS, pod))  # garbage collection of orphans
                changed = True
        for dep in deployments:
            owned = [p for p in pods if wl.owned_by(p, dep)]
            replicas = int((dep.get("spec") or {}).get("replicas", 1))
            for extra in wl.excess(owned, replicas):
                await self.api.delete(_path(PODS, extra))
                changed = True
            load: dict[str, int] = {}
            for pod in owned:
                node = str((pod.get("spec") or {}).get("nodeName", ""))
                load[node] = load.get(node, 0) + 1
            ns = wl.key_of(dep)[0]
            for node in wl.schedule(replicas - len(owned), ready_nodes, load):
                await self.api.create(collection("v1", "pods", ns), wl.pod_for(dep, node))
                changed = True
        return changed

    async def _sync_pods(self, pods: Sequence[Body]) -> list[wl.Endpoint]:
        """Run a backend per pod bound to one of our nodes; patch pod status; return endpoints."""
        ours = [
            p
            for p in pods
            if (p.get("spec") or {}).get("nodeName") in self.nodes
            and not (p.get("metadata") or {}).get("deletionTimestamp")
        ]
        uids = {wl.key_of(p): _uid(p) for p in ours}
        for key, backend in list(self.runner.backends.items()):
            if uids.get(key) != backend.uid:  # pod gone, or a new pod under an old name
                await self.runner.remove(key)
        fresh = [self._backend_for(p) for p in ours]
        started = await asyncio.gather(
            *(self.runner.add(b) for b in fresh if b is not None), return_exceptions=True
        )
        for err in started:
            if isinstance(err, PodStartError):
                log.warning("pod_start_failed err=%s", err)
            elif isinstance(err, BaseException):
                raise err
        return [await self._pod_status(p) for p in ours]

    def _backend_for(self, pod: Body) -> Backend | None:
        """A new Backend for a pod without one, else None."""
        key = wl.key_of(pod)
        if key in self.runner.backends:
            return None
        member = self.nodes[pod["spec"]["nodeName"]]
        return Backend(
            key=key,
            uid=_uid(pod),
            node=member.name,
            netns=member.netns,
            ip=self.runner.allocate_ip(member.index, member.name),
            ports=tuple(wl.container_ports(pod.get("spec") or {})),
        )

    async def _pod_status(self, pod: Body) -> wl.Endpoint:
        key = wl.key_of(pod)
        backend = self.runner.backends[key]
        node = self.nodes[backend.node]
        ready = backend.running and self.node_ready[backend.node]
        current = pod.get("status") or {}
        if (
            current.get("podIP") != backend.ip
            or wl.pod_ready(pod) != ready
            or current.get("phase") != "Running"
            or _container_started(current) != backend.running
        ):
            status = wl.pod_status(
                pod,
                host_ip=str(node.host.addr4),
                pod_ip=backend.ip,
                running=backend.running,
                ready=ready,
                now=now(),
            )
            await self.api.patch(f"{_path(PODS, pod)}/status", {"status": status})
        return wl.Endpoint(
            namespace=key[0],
            pod=key[1],
            uid=backend.uid,
            node=backend.node,
            ip=backend.ip,
            labels=wl.labels_of(pod),
            ports=backend.ports,
            ready=ready,
        )

    async def _sync_deployment_status(
        self, deployments: Sequence[Body], pods: Sequence[Body], endpoints: Sequence[wl.Endpoint]
    ) -> None:
        ready = {(e.namespace, e.pod) for e in endpoints if e.ready}
        for dep in deployments:
            owned = [wl.key_of(p) for p in pods if wl.owned_by(p, dep)]
            count, ready_count = len(owned), sum(k in ready for k in owned)
            want = {
                "observedGeneration": (dep.get("metadata") or {}).get("generation", 1),
                "replicas": count,
                "updatedReplicas": count,
                "readyReplicas": ready_count,
                "availableReplicas": ready_count,
                "unavailableReplicas": count - ready_count,
            }
            have = dep.get("status") or {}
            if any(have.get(k, 0) != v for k, v in want.items()):
                await self.api.patch(f"{_path(DEPLOYMENTS, dep)}/status", {"status": want})

    # -- services ------------------------------------------------------------------------------

    async def _sync_slices(
        self, services: Sequence[Body], endpoints: Sequence[wl.Endpoint]
    ) -> None:
        slices = {wl.key_of(s): s for s in await self.api.list(SLICES)}
        wanted: set[tuple[str, str]] = set()
        for svc in services:
            if not (svc.get("spec") or {}).get("selector"):
                continue  # user-managed endpoints
            desired = wl.endpoint_slice(svc, endpoints)
            key = wl.key_of(desired)
            wanted.add(key)
            current = slices.get(key)
            if current is None:
                await self.api.create(
                    collection("discovery.k8s.io/v1", "endpointslices", key[0]), desired
                )
            elif wl.slice_differs(current, desired):
                patch = {k: desired[k] for k in ("endpoints", "ports")}
                patch["metadata"] = {"labels": desired["metadata"]["labels"]}
                await self.api.patch(_path(SLICES, current), patch)
        for key, current in slices.items():
            mine = wl.labels_of(current).get(wl.MANAGED_BY_LABEL) == wl.MANAGED_BY
            if mine and key not in wanted and key[1].endswith("-lab"):
                await self.api.delete(_path(SLICES, current))

    async def _sync_proxies(
        self, services: Sequence[Body], endpoints: Sequence[wl.Endpoint]
    ) -> None:
        for name, proxy in self.proxies.items():
            await proxy.sync(frontends_for(name, services, endpoints))

    # -- commands ------------------------------------------------------------------------------

    async def hold(self, key: PodKey, held: bool) -> None:
        if key not in self.runner.backends:
            raise KeyError(f"no pod {key[0]}/{key[1]} runs on the bed's nodes")
        if held:
            await self.runner.hold(key)
        else:
            await self.runner.start(key)

    def describe(self) -> dict[PodKey, dict[str, Any]]:
        return {
            key: {
                "node": b.node,
                "ip": b.ip,
                "ports": [p for _, p in b.ports],
                "pid": b.pid,
                "running": b.running,
                "held": b.held,
            }
            for key, b in self.runner.backends.items()
        }


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid", ""))


def _container_started(status: Mapping[str, Any]) -> bool:
    return all(bool(c.get("started")) for c in status.get("containerStatuses") or [{}])


def frontends_for(
    node: str, services: Sequence[Mapping[str, Any]], endpoints: Sequence[wl.Endpoint]
) -> dict[Frontend, list[Upstream]]:
    """What kube-proxy on `node` serves: each LoadBalancer ingress IP and TCP port, to ready
    endpoints anywhere (Cluster) or on this node only (Local)."""
    out: dict[Frontend, list[Upstream]] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        local = spec.get("externalTrafficPolicy") == "Local"
        chosen = [
            e for e in wl.selected(svc, endpoints) if e.ready and (not local or e.node == node)
        ]
        for _name, port, target in wl.service_ports(svc):
            ups = [
                Upstream(e.ip, p, e.node)
                for e in chosen
                if (p := e.target_port(target)) is not None
            ]
            for entry in ingress:
                if entry.get("ip"):
                    out[Frontend(str(entry["ip"]), port)] = ups
    return out
