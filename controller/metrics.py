"""Prometheus metrics (prefix `lbctl_`) and the /metrics, /livez, /readyz endpoint; for operator.

Counters are bumped by the reconciler through the Recorder protocol; pool usage and config state
are read from the reconciler at scrape time (no bookkeeping to drift).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from controller.reconciler import Reconciler

log = logging.getLogger("lbctl.controller.metrics")


class Metrics:
    """One registry per controller instance (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.allocations = Counter(
            "lbctl_allocations", "Addresses given to Services, by reason", ["reason"], registry=r
        )
        self.failures = Counter(
            "lbctl_allocation_failures",
            "Services left without an address, by reason (once per Service and reason)",
            ["reason"],
            registry=r,
        )
        self.writes = Counter(
            "lbctl_api_writes",
            "Writes to the API server, by kind (status, metadata, event) and result",
            ["kind", "result"],
            registry=r,
        )
        self.leader = Gauge("lbctl_leader", "1 while this replica may write", registry=r)
        self.activations = Gauge(
            "lbctl_activations",
            "Times this replica became the deciding one (each rebuilds its state from a listing)",
            registry=r,
        )
        self.queued = Gauge(
            "lbctl_writes_queued",
            "Objects with a write or Event waiting for a writer (one entry per object)",
            registry=r,
        )
        self.retrying = Gauge(
            "lbctl_writes_retrying",
            "Services whose last write failed, waiting for their retry (capped backoff)",
            registry=r,
        )

    # Recorder protocol (controller.reconciler)
    def allocated(self, reason: str) -> None:
        self.allocations.labels(reason=reason).inc()

    def failed(self, reason: str) -> None:
        self.failures.labels(reason=reason).inc()

    def wrote(self, kind: str, result: str) -> None:
        self.writes.labels(kind=kind, result=result).inc()

    def watch(self, reconciler: Callable[[], Reconciler]) -> None:
        """Report the state of whichever Reconciler is current at scrape time."""
        self.registry.register(_StateCollector(reconciler))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Pool size and use per pool and family; config loaded and stale; Services pending."""

    def __init__(self, reconciler: Callable[[], Reconciler]) -> None:
        self._rec = reconciler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rec = self._rec()
        size = GaugeMetricFamily(
            "lbctl_pool_size", "Usable addresses in a pool", labels=["pool", "family"]
        )
        used = GaugeMetricFamily(
            "lbctl_pool_in_use", "Addresses held in a pool", labels=["pool", "family"]
        )
        allocator = rec.allocator
        for pool in allocator.config.pools:
            for fam in sorted(pool.families()):
                in_use, total = allocator.usage(pool.name, fam)
                size.add_metric([pool.name, fam.k8s], total)
                used.add_metric([pool.name, fam.k8s], in_use)
        yield size
        yield used
        yield GaugeMetricFamily(
            "lbctl_config_loaded", "1 when a valid config is in force", value=int(rec.config.loaded)
        )
        yield GaugeMetricFamily(
            "lbctl_config_stale",
            "1 when the ConfigMap's newest content is not the config in force",
            value=int(rec.config.stale),
        )
        yield GaugeMetricFamily(
            "lbctl_services_pending",
            "LoadBalancer Services waiting for an address",
            value=len(allocator.pending()),
        )


class HealthServer:
    """/metrics, /livez and /readyz over plain HTTP, in a daemon thread."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "0.0.0.0",  # probes and scrapes come from the node
        port: int = 0,
    ) -> None:
        handler = _handler(metrics, alive, ready)
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
    metrics: Metrics, alive: Callable[[], bool], ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok = alive() if path == "/livez" else ready()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
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
