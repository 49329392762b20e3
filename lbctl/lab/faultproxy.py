"""A fault proxy in front of the real API server: tests point clients at it to inject faults per
client and per node (lbctl.lab.faults) and read who asked what (lbctl.lab.reqlog).

It terminates TLS with a certificate of the control plane's CA and forwards each request to the
API server (lbctl.lab.controlplane) with the client's Authorization header untouched, so the API
server authenticates and authorizes the client itself. A client certificate cannot pass through
a terminating proxy: clients behind it use ServiceAccount tokens, and a request's identity is
the ServiceAccount's name. It runs on aiohttp in its own thread and loop; the requests
themselves are lbctl.lab.proxyforward's.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from lbctl.lab import listeners
from lbctl.lab.faults import FaultInjector
from lbctl.lab.proxyforward import Forwarder, OpenWatch
from lbctl.lab.reqlog import RequestLog, RequestRecord

if TYPE_CHECKING:
    from lbctl.lab.controlplane import ControlPlane

__all__ = ["FaultProxy"]

START_TIMEOUT = 10.0
HOST_SOURCE = "host"  # requests on the proxy's own listener
CONNECT_TIMEOUT = 10.0  # to the API server on loopback: only a dead one takes this long


class FaultProxy:
    """`with FaultProxy(cp) as proxy:` gives proxy.url, proxy.faults, proxy.requests() and
    proxy.service_account_kubeconfig(...). Every listener and task ends on exit."""

    def __init__(
        self,
        cp: ControlPlane,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        request_log: Path | None = None,
    ) -> None:
        self.cp, self.host, self.port = cp, host, port
        self.faults = FaultInjector()
        self.faults.on_refuse = self._on_refuse
        self._log = RequestLog(request_log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._forwarder: Forwarder | None = None
        self._runners: dict[str, web.AppRunner] = {}
        self._listeners: list[listeners.Listener] = []
        self._tls: dict[str, ssl.SSLContext] = {}
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    # ---- what tests use ------------------------------------------------------------------

    def requests(self, *, identity: str | None = None) -> list[RequestRecord]:
        """Every answered request (watches as they started), oldest first."""
        return self._log.records(identity=identity)

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig with a fresh token of ServiceAccount namespace/name, via the proxy."""
        return self.cp.service_account_kubeconfig(namespace, name, path, server=self.url)

    def cut_watches(self, *, identity: str | None = None, source: str | None = None) -> int:
        """End the matching open watch streams cleanly (as the API server ends a watch at its
        timeout); the clients' next watches meet the rules in force. Returns how many."""

        def selects(watch: OpenWatch) -> bool:
            return identity in (None, watch.identity) and source in (None, watch.source)

        async def cut() -> int:
            assert self._forwarder is not None
            return self._forwarder.cut(selects)

        count: int = self._call(cut())
        return count

    def serve_socket(self, sock: socket.socket, source: str) -> None:
        """Serve on an already-listening socket too (one bound inside a node's namespace, say);
        its requests are tagged `source`, which rules may select."""
        self._call(self._serve(sock, source))

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start the loop thread; returns once the proxy accepts connections."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        ready.result(timeout=START_TIMEOUT)
        return self

    def stop(self) -> None:
        """Idempotent: closes the listeners, ends every stream and request, joins the thread."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=START_TIMEOUT)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self, ready: Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._setup())
        except BaseException as err:
            ready.set_exception(err)
            loop.run_until_complete(self._teardown())
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._teardown())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        upstream_tls = ssl.create_default_context(cafile=str(self.cp.pki.ca))
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=upstream_tls),
            auto_decompress=False,  # gzip passes through as the API server sent it
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        )
        self._forwarder = Forwarder(self.cp.url, session, self.faults, self._log)
        sock = listeners.listen_tcp(self.host, self.port)
        self.port = sock.getsockname()[1]
        await self._serve(sock, HOST_SOURCE)

    async def _teardown(self) -> None:
        for listener in self._listeners:
            await listeners.stop(listener, self._runners[listener.source])
            listeners.release(listener)
        for runner in self._runners.values():
            await runner.cleanup()
        # Requests still inside an injected delay, or finishing for a client that left.
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        if self._forwarder is not None:
            await self._forwarder.session.close()

    async def _serve(self, sock: socket.socket, source: str) -> None:
        runner = self._runners.get(source)
        if runner is None:
            runner = web.AppRunner(
                self._app(source),
                handle_signals=False,
                shutdown_timeout=0.5,
                access_log=None,
                # A watch's client that leaves must end its stream to the API server too.
                handler_cancellation=True,
            )
            await runner.setup()
            self._runners[source] = runner
        listener = listeners.adopt(sock, source)
        self._listeners.append(listener)
        if not self._refused(source):
            await listeners.start(listener, runner, self._tls_for(listener.address[0]))

    def _app(self, source: str) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            assert self._forwarder is not None
            return await self._forwarder.handle(request, source)

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    def _tls_for(self, host: str) -> ssl.SSLContext:
        """A serving context whose certificate names `host` (one per listening address)."""
        if host not in self._tls:
            name = f"faultproxy-{self.port}-{len(self._tls)}"  # the port: unique among live ones
            hosts = sorted({host, "127.0.0.1", "localhost"})
            pair = self.cp.pki.issue(
                name, "lbctl-faultproxy", server=True, client=False, hosts=hosts
            )
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(pair.cert), str(pair.key))
            self._tls[host] = ctx
        return self._tls[host]

    # ---- refusals ------------------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        if self._loop is None or self._stopped.is_set():
            coro.close()
            raise RuntimeError("FaultProxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=START_TIMEOUT)

    def _refused(self, source: str) -> bool:
        refused = self.faults.refused_sources()
        return None in refused or source in refused

    def _on_refuse(self, refused: frozenset[str | None]) -> None:
        if self._loop is not None and not self._stopped.is_set():
            self._call(self._apply_refusals())

    async def _apply_refusals(self) -> None:
        """Close the listeners of refused sources (open connections aborted), reopen the rest."""
        for listener in self._listeners:
            runner = self._runners[listener.source]
            refused = self._refused(listener.source)
            if refused and listener.site is not None:
                await listeners.stop(listener, runner)
            elif not refused and listener.site is None:
                await listeners.start(listener, runner, self._tls_for(listener.address[0]))
