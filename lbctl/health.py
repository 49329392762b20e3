"""/metrics, /livez and /readyz over plain HTTP in a daemon thread: the one health endpoint of
the controller and the speaker (each passes its own metrics and probes)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("lbctl.health")


class Rendered(Protocol):
    def render(self) -> bytes: ...


class HealthServer:
    """/metrics, /livez and /readyz over plain HTTP, in a daemon thread. `metrics` is anything
    with a `render() -> bytes` (the Prometheus text of its registry); `explain` says why it is
    not ready, in /readyz's body after "not ok"."""

    def __init__(
        self,
        metrics: Rendered,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        explain: Callable[[], str] = lambda: "",
        host: str = "0.0.0.0",  # probes and scrapes come from the node
        port: int = 0,
    ) -> None:
        handler = _handler(metrics, alive, ready, explain)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lbctl-health", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def _handler(
    metrics: Rendered,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
    explain: Callable[[], str],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                ok = alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
            elif path == "/readyz":
                if ready():
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._send(503, f"not ok\n{explain()}".encode(), "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, data: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("health_request %s", format % args)

    return Handler
