"""What kubelet, kube-proxy and kube-controller-manager would do for the bed's nodes, over HTTP
only: Nodes, Deployment pods with real backends, EndpointSlices, VIP proxies; used by tests and
the lab."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from lbctl.lab.kubeapi import KubeApi, KubeApiError, collection, read_kubeconfig
from lbctl.lab.kubesync import KubeletSync
from lbctl.lab.podrunner import PodKey
from lbctl.lab.topology import Topology

log = logging.getLogger(__name__)
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
WATCHED = (("v1", "nodes"), ("v1", "pods"), ("v1", "services"), ("apps/v1", "deployments"))


class Kubelet:
    """Runs in its own thread and event loop; start()/stop() are bounded, stop() ends every
    process it started. Public methods are called from other threads."""

    def __init__(
        self,
        topology: Topology,
        *,
        kubeconfig: Path | None = None,
        server: str | None = None,
        headers: Mapping[str, str] | None = None,
        resync: float = 5.0,
        node_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if kubeconfig is not None:
            self._api_args: tuple[str, dict[str, str]] = read_kubeconfig(kubeconfig)
        elif server is not None:
            self._api_args = (server, dict(headers or {}))
        else:
            raise ValueError("Kubelet needs a kubeconfig or a server URL")
        self.topology = topology
        self.resync = resync
        self.node_labels = {k: dict(v) for k, v in (node_labels or {}).items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sync: KubeletSync | None = None
        self._dirty: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.passes = 0
        self.last_error: BaseException | None = None

    # -- lifecycle (caller's thread) -----------------------------------------------------------

    def start(self) -> Kubelet:
        """Start the thread; return after the first full pass (Nodes registered)."""
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
        """Stop proxies and every backend (by PID), close the API session; bounded."""
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

    def sync(self, timeout: float = 10.0) -> None:
        """Run a full pass that starts after this call, and wait for it to finish."""
        self._call(self._request_pass(), timeout)

    def set_node_ready(self, name: str, ready: bool, timeout: float = 10.0) -> None:
        """What the node lifecycle controller does: Ready condition, not-ready taints, pods on
        that node (and so their endpoints) not ready. Returns after the pass that applied it."""
        self.topology.node(name)  # KeyError for a node that is not in the bed
        self._call(self._set_ready(name, ready), timeout)

    def stop_backend(self, namespace: str, pod: str, timeout: float = 10.0) -> None:
        """Stop a pod's process and keep it stopped; its endpoint turns not ready."""
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
        self._dirty, self._stopping = asyncio.Event(), asyncio.Event()
        server, headers = self._api_args
        async with KubeApi(server, headers) as api:
            self._sync = KubeletSync(
                api, self.topology, self.node_labels, on_change=self._dirty.set
            )
            watches = [asyncio.create_task(self._watch(api, *w)) for w in WATCHED]
            try:
                await self._pass()
                if self.last_error is not None:
                    raise self.last_error
                ready.set_result(None)
                await self._run()
            finally:
                for task in watches:
                    task.cancel()
                await asyncio.gather(*watches, return_exceptions=True)
                await self._sync.close()
                for waiter in self._waiters:
                    waiter.cancel()

    async def _run(self) -> None:
        assert self._dirty is not None and self._stopping is not None
        while not self._stopping.is_set():
            stop = asyncio.create_task(self._stopping.wait())
            dirty = asyncio.create_task(self._dirty.wait())
            await asyncio.wait(
                {stop, dirty}, timeout=self.resync, return_when=asyncio.FIRST_COMPLETED
            )
            stop.cancel()
            dirty.cancel()
            if not self._stopping.is_set():
                await self._pass()

    async def _pass(self) -> None:
        assert self._dirty is not None and self._sync is not None
        self._dirty.clear()
        waiters, self._waiters = self._waiters, []
        try:
            await self._sync.run_pass()
            self.last_error = None
        except (KubeApiError, OSError, RuntimeError) as err:
            self.last_error = err
            log.warning("kubelet_pass_failed err=%s", err)
            await asyncio.sleep(0.2)  # back off; the next pass retries
            self._dirty.set()
        self.passes += 1
        for waiter in waiters:
            if not waiter.done():
                if self.last_error is not None:
                    waiter.set_exception(self.last_error)
                else:
                    waiter.set_result(None)

    async def _request_pass(self) -> None:
        assert self._dirty is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._dirty.set()
        await waiter

    async def _set_ready(self, name: str, ready: bool) -> None:
        assert self._sync is not None
        self._sync.node_ready[name] = ready
        await self._request_pass()

    async def _hold(self, key: PodKey, held: bool) -> None:
        assert self._sync is not None
        await self._sync.hold(key, held)
        await self._request_pass()

    async def _describe(self) -> dict[PodKey, dict[str, Any]]:
        assert self._sync is not None
        return self._sync.describe()

    async def _watch(self, api: KubeApi, api_version: str, plural: str) -> None:
        """Any change to a watched kind asks for a pass; errors retry with a short pause."""
        assert self._dirty is not None
        path = collection(api_version, plural)
        while True:
            try:
                async for _event in api.watch(path, timeout_seconds=60):
                    self._dirty.set()
            except KubeApiError as err:
                log.debug("kubelet_watch_retry path=%s err=%s", path, err)
            await asyncio.sleep(0.5)
