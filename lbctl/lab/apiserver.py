"""The bed's Kubernetes API server: an in-memory API on aiohttp in its own thread and loop.

Used by component tests (`with ApiServer() as api:`) and by `lbctl lab up`, which runs it
standalone (`python -m lbctl.lab.apiserver --port P --kubeconfig FILE`).

Why not kmock's KubernetesEmulator (the starting point test-bed.md suggests): kmock 0.8 rewrites
objects before any request handler runs and replays every object on each watch reconnect, so
fixing its gaps (resourceVersion, resume, 410, status isolation, strategic merge, ...) meant
overriding every handler. The bed serves the API on aiohttp, kmock's own base, directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from lbctl.lab import listeners
from lbctl.lab.api import defaulting
from lbctl.lab.api.app import Shared, build_app
from lbctl.lab.api.handlers import Handlers
from lbctl.lab.api.resources import Registry
from lbctl.lab.api.store import Store
from lbctl.lab.faults import FaultInjector
from lbctl.lab.reqlog import RequestLog, RequestRecord

__all__ = ["ApiServer", "FaultInjector", "RequestRecord"]

START_TIMEOUT = 10.0


class ApiServer:
    """A Kubernetes API server for the bed; see lbctl/lab/api/ for what it implements.

    `service_cidrs` is `--service-cluster-ip-range`: one or two ranges (one per family, the
    primary first), inside the documentation ranges. The default IPv4 /24 holds only 253
    Services: tests with thousands of Services create them single-stack IPv6
    (`ipFamilies: [IPv6]`, room for 2^20) and with `allocateLoadBalancerNodePorts: false`
    (the real node port range, 30000-32767, holds 2,768).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history: int = 10_000,
        bookmark_interval: float = 5.0,
        request_log: Path | None = None,
        service_cidrs: Iterable[str | defaulting.IPNet] = defaulting.DEFAULT_SERVICE_CIDRS,
    ) -> None:
        self.host, self.port = host, port
        # Parsed here so that a bad range fails the constructor, not the server thread.
        self._service_cidrs = list(defaulting.service_cidrs(service_cidrs).values())
        self.faults = FaultInjector()
        self._history = history
        self._bookmark_interval = bookmark_interval
        self._log = RequestLog(request_log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shared: Shared | None = None
        self._runners: dict[str, web.AppRunner] = {}
        self._listeners: list[listeners.Listener] = []
        self._stopped = threading.Event()
        self.faults.on_refuse = self._on_refuse

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread; returns once the host listener accepts connections."""
        if self._thread is not None:
            raise RuntimeError("ApiServer already started")
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="bed-apiserver", daemon=True
        )
        self._thread.start()
        ready.result(timeout=START_TIMEOUT)

    def _main(self, ready: Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._setup())
        except BaseException as err:
            ready.set_exception(err)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._teardown())
            # A handler still inside an injected delay would otherwise keep its transport open
            # past close() (a ResourceWarning that fails a later test under -W error).
            loop.run_until_complete(_cancel_leftovers())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        registry = Registry()
        store = Store(registry, self._history, self._service_cidrs)
        self._shared = Shared(
            registry, Handlers(store, self._bookmark_interval), self.faults, self._log
        )
        sock = listeners.listen_tcp(self.host, self.port)
        self.port = sock.getsockname()[1]
        await self._serve(sock, "host")

    async def _serve(self, sock: socket.socket, source: str) -> None:
        assert self._shared is not None
        runner = self._runners.get(source)
        if runner is None:
            runner = web.AppRunner(
                build_app(self._shared, source),
                handle_signals=False,
                shutdown_timeout=0.5,
                access_log=None,
            )
            await runner.setup()
            self._runners[source] = runner
        listener = listeners.adopt(sock, source)
        self._listeners.append(listener)
        if not self._refused(source):
            await listeners.start(listener, runner)
        else:
            await listeners.stop(listener, runner)

    async def _teardown(self) -> None:
        if self._shared is not None:
            self._shared.handlers.store.close_watchers()
        for listener in self._listeners:
            await listeners.stop(listener, self._runners[listener.source])
            listeners.release(listener)
        for runner in self._runners.values():
            await runner.cleanup()

    def stop(self) -> None:
        """Idempotent: ends watches, closes sockets, joins the thread."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- from other threads ----------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        if self._loop is None or self._stopped.is_set():
            raise RuntimeError("ApiServer is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=START_TIMEOUT)

    def serve_socket(self, sock: socket.socket, source: str) -> None:
        """Serve the same API on an already-listening socket; requests are tagged `source`."""
        self._call(self._serve(sock, source))

    def requests(self, *, identity: str | None = None) -> list[RequestRecord]:
        return self._log.records(identity=identity)

    def write_kubeconfig(
        self, path: Path, *, identity: str = "admin", server: str | None = None
    ) -> Path:
        """A kubeconfig whose bearer token is `identity` (the request log's identity)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "bed", "cluster": {"server": server or self.url}}],
            "users": [{"name": identity, "user": {"token": identity}}],
            "contexts": [
                {
                    "name": "bed",
                    "context": {"cluster": "bed", "user": identity, "namespace": "default"},
                }
            ],
            "current-context": "bed",
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(store, *args)` on the server loop (for tests that need the store directly)."""
        assert self._shared is not None
        store = self._shared.handlers.store

        async def run() -> Any:
            return fn(store, *args)

        return self._call(run())

    # ---- outages -----------------------------------------------------------------------

    def _refused(self, source: str) -> bool:
        refused = self.faults.refused_sources()
        return None in refused or source in refused

    def _on_refuse(self, refused: frozenset[str | None]) -> None:
        if self._loop is None or self._stopped.is_set():
            return
        asyncio.run_coroutine_threadsafe(self._apply_refusals(), self._loop).result(
            timeout=START_TIMEOUT
        )

    async def _apply_refusals(self) -> None:
        assert self._shared is not None
        for listener in self._listeners:
            runner = self._runners[listener.source]
            refused = self._refused(listener.source)
            if refused and listener.site is not None:
                self._shared.handlers.store.close_watchers(_of_source(listener.source))
                await listeners.stop(listener, runner)
            elif not refused and listener.site is None:
                await listeners.start(listener, runner)


async def _cancel_leftovers() -> None:
    """Cancel every task still on the loop (but this one) and wait for them to finish."""
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)


def _of_source(source: str) -> Callable[[Any], bool]:
    return lambda tag: bool(tag and tag[1] == source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the bed's Kubernetes API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig here once listening")
    parser.add_argument("--identity", default="admin", help="token in the kubeconfig")
    parser.add_argument(
        "--service-cluster-ip-range",
        default=",".join(defaulting.DEFAULT_SERVICE_CIDRS),
        help="one or two comma-separated CIDRs (one per family, primary first)",
    )
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    cidrs = args.service_cluster_ip_range.split(",")
    with ApiServer(args.host, args.port, service_cidrs=cidrs) as server:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig, identity=args.identity)
        print(f"apiserver listening url={server.url}", flush=True)
        while not done.wait(1.0):
            pass
    with contextlib.suppress(Exception):
        print("apiserver stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
