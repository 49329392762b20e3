"""The kubelet stand-in: for each bed node, what a kubelet does and nothing more — register the
Node, renew its Lease, run the Pods the real scheduler binds to it as processes in the node's
namespace, write their status. Deployments, EndpointSlices, taints and proxying are the real
kube-controller-manager's and kube-proxy's. Used by the bed and the lab.

Each node talks to the API as itself (client certificate CN=system:node:NAME, O=system:nodes),
so the Node authorizer and NodeRestriction hold it to a kubelet's rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from lbctl.core.timefmt import micro_time, rfc3339
from lbctl.lab import workloads as wl
from lbctl.lab.kubeapi import KubeApi, KubeApiError
from lbctl.lab.podrunner import Backend, PodKey, PodRunner, PodStartError
from lbctl.lab.topology import NodeMember, Topology

log = logging.getLogger(__name__)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
# Lease renewals every second; the controller-manager's grace period is 5 s (controlplane.py).
LEASE_RENEW = 1.0
LEASE_SECONDS = 40  # what a kubelet writes; the node lifecycle controller reads renewTime only
STATUS_EVERY = 10.0  # nodeStatusUpdateFrequency's default
RESYNC = 5.0
NODES = "/api/v1/nodes"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def _now() -> datetime:
    return datetime.now(UTC)


class NodeAgent:
    """One node's kubelet: an asyncio task group on the Kubelet's loop, with its own client."""

    def __init__(
        self,
        member: NodeMember,
        api: KubeApi,
        runner: PodRunner,
        labels: Mapping[str, str],
    ) -> None:
        self.member = member
        self.api = api
        self.runner = runner
        self.labels = dict(labels)
        self.dirty = asyncio.Event()
        self.node_uid = ""
        self.passes = 0

    @property
    def name(self) -> str:
        return self.member.name

    async def run(self, registered: asyncio.Future[None] | None = None) -> None:
        await self._register()
        await self._renew_lease()
        await self._reconcile()
        if registered is not None and not registered.done():
            registered.set_result(None)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._every(LEASE_RENEW, self._renew_lease))
            group.create_task(self._every(STATUS_EVERY, self._post_status))
            group.create_task(self._watch_pods())
            group.create_task(self._reconcile_loop())

    # -- the Node and its Lease -------------------------------------------------------------

    def _node_body(self) -> dict[str, Any]:
        host = self.member.host
        return wl.node_body(
            self.name, [str(host.addr4), str(host.addr6)], self.labels, rfc3339(_now())
        )

    async def _register(self) -> None:
        try:
            node = await self.api.create(NODES, self._node_body())
        except KubeApiError as err:
            if err.status != 409:
                raise
            node = await self.api.request("GET", f"{NODES}/{self.name}") or {}
        self.node_uid = str(node["metadata"]["uid"])
        await self._post_status()

    async def _post_status(self) -> None:
        """Ready with a fresh heartbeat: at start (the node lifecycle controller marked it
        Unknown while this agent was stopped) and every STATUS_EVERY, as a kubelet does."""
        patch = {"status": {"conditions": wl.node_conditions(rfc3339(_now()))}}
        await self.api.patch(f"{NODES}/{self.name}/status", patch)

    async def _renew_lease(self) -> None:
        path = f"{LEASES}/{self.name}"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_time(_now()),
        }
        try:
            await self.api.patch(path, {"spec": spec})
        except KubeApiError as err:
            if err.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.node_uid}
            meta = {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [owner]}
            await self.api.create(LEASES, {"metadata": meta, "spec": spec})

    async def _every(self, interval: float, step: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except KubeApiError as err:
                log.warning("kubelet_call_failed node=%s step=%s err=%s", self.name, step, err)

    # -- pods --------------------------------------------------------------------------------

    @property
    def _pod_query(self) -> str:
        return f"fieldSelector=spec.nodeName%3D{self.name}"

    async def _watch_pods(self) -> None:
        while True:
            try:
                async for _event in self.api.watch("/api/v1/pods", 60, self._pod_query):
                    self.dirty.set()
            except KubeApiError as err:
                log.debug("kubelet_watch_retry node=%s err=%s", self.name, err)
            await asyncio.sleep(0.5)

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), RESYNC)
            self.dirty.clear()
            try:
                await self._reconcile()
            except (KubeApiError, OSError) as err:
                log.warning("kubelet_pass_failed node=%s err=%s", self.name, err)
                await asyncio.sleep(0.2)
                self.dirty.set()

    async def _reconcile(self) -> None:
        pods = await self.api.list(f"/api/v1/pods?{self._pod_query}")
        live = {wl.key_of(p): p for p in pods if not wl.pod_finished(p)}
        for key, backend in list(self.runner.backends.items()):
            if backend.node == self.name and wl.uid_of(live.get(key)) != backend.uid:
                await self.runner.remove(key)
        for key, pod in live.items():
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                await self._finish_deletion(key, pod)
                continue
            try:
                await self._run_pod(key, pod)
            except PodStartError as err:
                log.warning("pod_start_failed node=%s err=%s", self.name, err)
        self.passes += 1

    async def _run_pod(self, key: PodKey, pod: dict[str, Any]) -> None:
        backend = self.runner.backends.get(key)
        if backend is None:
            backend = Backend(
                key=key,
                uid=wl.uid_of(pod),
                node=self.name,
                netns=self.member.netns,
                ip=self.runner.allocate_ip(self.member.index, self.name),
                ports=tuple(wl.container_ports(pod.get("spec") or {})),
            )
            await self.runner.add(backend)
        elif not backend.running and not backend.held:
            await self.runner.start(key)
        current = pod.get("status") or {}
        ready = backend.running
        if (
            current.get("podIP") != backend.ip
            or wl.pod_ready(pod) != ready
            or current.get("phase") != "Running"
        ):
            status = wl.pod_status(
                pod,
                host_ip=str(self.member.host.addr4),
                pod_ip=backend.ip,
                running=backend.running,
                ready=ready,
                now=rfc3339(_now()),
            )
            path = f"/api/v1/namespaces/{key[0]}/pods/{key[1]}/status"
            await self.api.patch(path, {"status": status})

    async def _finish_deletion(self, key: PodKey, pod: dict[str, Any]) -> None:
        """Stop the pod's process, then delete the Pod for good (a kubelet's last word)."""
        await self.runner.remove(key)
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": wl.uid_of(pod)}}
        try:
            await self.api.delete(f"/api/v1/namespaces/{key[0]}/pods/{key[1]}", body)
        except KubeApiError as err:
            if err.status != 409:  # a new pod took the name
                raise


class Kubelet:
    """Every node's agent on one thread and event loop; start()/stop() are bounded, and stop()
    ends every process it started. Public methods are called from other threads."""

    def __init__(
        self,
        topology: Topology,
        kubeconfigs: Mapping[str, Path],
        *,
        node_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.topology = topology
        self.kubeconfigs = dict(kubeconfigs)
        self.node_labels = {k: dict(v) for k, v in (node_labels or {}).items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: PodRunner | None = None
        self.agents: dict[str, NodeAgent] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle (caller's thread) -----------------------------------------------------------

    def start(self) -> Kubelet:
        """Start the thread; return once every Node is registered with its Lease."""
        if self._thread is not None:
            raise RuntimeError("kubelet already started")
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="lab-kubelet", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout=START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every agent and every pod process (by PID); bounded."""
        loop, thread = self._loop, self._thread
        if loop is not None and self._stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stopping.set)
        if thread is not None:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"kubelet thread did not stop within {STOP_TIMEOUT} s")
        self._thread = None

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- commands (caller's thread) ------------------------------------------------------------

    def stop_node(self, name: str, timeout: float = 10.0) -> None:
        """Stop one node's kubelet as if it died: no more Lease renewals or status; its pods'
        processes keep running, as a real node's containers do."""
        self._call(self._stop_agent(name), timeout)

    def start_node(self, name: str, timeout: float = 10.0) -> None:
        """Start a stopped node's kubelet again; returns once it has re-registered."""
        self._call(self._start_agent(name), timeout)

    def sync(self, timeout: float = 10.0) -> None:
        """A reconcile pass of every running agent, finished before this returns."""
        self._call(self._sync_all(), timeout)

    def stop_backend(self, namespace: str, pod: str, timeout: float = 10.0) -> None:
        """Stop a pod's process and keep it stopped; its Pod turns not ready."""
        self._call(self._hold((namespace, pod), True), timeout)

    def start_backend(self, namespace: str, pod: str, timeout: float = 10.0) -> None:
        """Restart a pod's process stopped with stop_backend (or one that died)."""
        self._call(self._hold((namespace, pod), False), timeout)

    def backends(self) -> dict[PodKey, dict[str, Any]]:
        """Pods this kubelet runs: node, ip, ports, pid, running."""
        return self._call(self._describe(), 5.0)  # type: ignore[no-any-return]

    # -- the loop (kubelet thread) -------------------------------------------------------------

    def _call(self, coro: Any, timeout: float) -> Any:
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("kubelet is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _thread_main(self, ready: Future[None]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as err:
            log.exception("kubelet_crashed")
            if not ready.done():
                ready.set_exception(err)

    async def _main(self, ready: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._runner = PodRunner(
            record_pid=self.topology.record_pid,
            forget_pid=self.topology.forget_pid,
            log_dir=self.topology.run_dir / "logs",
            on_change=self._backend_changed,
        )
        try:
            await asyncio.gather(*(self._start_agent(n.name) for n in self.topology.nodes))
            ready.set_result(None)
            await self._stopping.wait()
        finally:
            for name in list(self._tasks):
                await self._stop_agent(name)
            await self._runner.close()
            for agent in self.agents.values():
                await agent.api.close()

    async def _start_agent(self, name: str) -> None:
        assert self._runner is not None
        if name in self._tasks:
            return
        agent = self.agents.get(name)
        if agent is None:
            api = KubeApi.from_kubeconfig(self.kubeconfigs[name])
            member = self.topology.node(name)
            labels = self.node_labels.get(name, {})
            agent = self.agents[name] = NodeAgent(member, api, self._runner, labels)
        registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(agent.run(registered), name=f"kubelet:{name}")
        self._tasks[name] = task
        done, _ = await asyncio.wait({task, registered}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            self._tasks.pop(name, None)
            task.result()  # raises what stopped it
            raise RuntimeError(f"kubelet of {name} ended before registering")

    async def _stop_agent(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _sync_all(self) -> None:
        await asyncio.gather(*(self.agents[n]._reconcile() for n in self._tasks))

    def _backend_changed(self) -> None:
        for agent in self.agents.values():
            agent.dirty.set()

    async def _hold(self, key: PodKey, held: bool) -> None:
        assert self._runner is not None
        if key not in self._runner.backends:
            raise KeyError(f"no pod {key[0]}/{key[1]} runs on the bed's nodes")
        if held:
            await self._runner.hold(key)
        else:
            await self._runner.start(key)
        await self._sync_all()

    async def _describe(self) -> dict[PodKey, dict[str, Any]]:
        assert self._runner is not None
        return {
            key: {
                "node": b.node,
                "ip": b.ip,
                "ports": [p for _, p in b.ports],
                "pid": b.pid,
                "running": b.running,
                "held": b.held,
            }
            for key, b in self._runner.backends.items()
        }
