"""Prometheus metrics (prefix `lbctl_`) and the /metrics, /livez, /readyz endpoint; for operator.

Counters are bumped by the reconciler through the Recorder protocol; pool usage and config state
are read from the reconciler at scrape time (no bookkeeping to drift).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lbctl.core.reasons import AllocFailure, AllocSuccess, StartBlock

if TYPE_CHECKING:
    from controller.blocked import Blockers
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
            "Full restores from a listing (at start-up and on gaining the Lease; a resume after "
            "renewing its own Lease record is not counted)",
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

    # Recorder protocol (controller.decisions): the enums' values are the label values
    def allocated(self, reason: AllocSuccess) -> None:
        self.allocations.labels(reason=reason.value).inc()

    def failed(self, reason: AllocFailure) -> None:
        self.failures.labels(reason=reason.value).inc()

    def wrote(self, kind: str, result: str) -> None:
        self.writes.labels(kind=kind, result=result).inc()

    def watch_blockers(self, blockers: Blockers) -> None:
        """lbctl_controller_start_blocked{reason}: 1 for each StartBlock in force, else 0."""
        self.registry.register(_BlockedCollector(blockers))

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


class _BlockedCollector(Collector):
    def __init__(self, blockers: Blockers) -> None:
        self._blockers = blockers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "lbctl_controller_start_blocked",
            "1 while this reason keeps the controller from working (the log says what to do)",
            labels=["reason"],
        )
        now = self._blockers.blocked()
        for reason in StartBlock:
            family.add_metric([reason.value], 1 if reason in now else 0)
        yield family
