"""The speaker's Prometheus metrics (prefix `lbctl_`), one registry per speaker; bumped by the
agent, the data plane and the announcer's hooks, served by lbctl.health.HealthServer.

Per-IP series (`lbctl_l2_announced`) are made at scrape time from what this node holds then, so
none stays behind when the IP leaves this node or its Service goes (MetalLB #1972, #1342), and
none costs memory between scrapes (a labelled Gauge child is ~0.8 KiB: 8 MiB at 10,000 IPs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily

from lbctl.core.model import IPAddress


class HeldLike(Protocol):
    @property
    def ips(self) -> tuple[IPAddress, ...]: ...

    @property
    def interface(self) -> str: ...


class Announced:
    """`lbctl_l2_announced`: 1 per (ip, interface) this node announces, made when scraped (on
    the health server's thread) from the holdings last handed over."""

    NAME, HELP = "lbctl_l2_announced", "1 for each IP this node announces, by interface"

    def __init__(self) -> None:
        # replaced whole by the control loop, never changed in place: a scrape reads one
        # mapping from start to end
        self.held: Mapping[IPAddress, HeldLike] = {}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["ip", "interface"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["ip", "interface"])
        for held in self.held.values():
            for ip in held.ips:
                family.add_metric([str(ip), held.interface], 1)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.announced = Announced()
        r.register(self.announced)
        self.frames_sent = Counter(
            "lbctl_l2_unsolicited_sent", "Gratuitous ARPs and unsolicited NAs sent, by family",
            ["family"], registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "lbctl_l2_requests_received", "ARP requests and neighbour solicitations for an IP "
            "this node announces, by family", ["family"], registry=r,
        )  # fmt: skip
        self.answers = Counter(
            "lbctl_l2_requests_answered", "ARP replies and neighbour advertisements sent",
            ["family"], registry=r,
        )  # fmt: skip
        self.ownership_changes = Counter(
            "lbctl_l2_ownership_changes", "IPs this node started or stopped announcing",
            registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "lbctl_l2_duplicate_responders", "Answers for an IP this node announces from a MAC "
            "that is no speaker's", registry=r,
        )  # fmt: skip
        self.api_fresh = Gauge(
            "lbctl_api_fresh", "1 while the API answered a probe in the last 30 s", registry=r
        )
        self.config_stale = Gauge(
            "lbctl_config_stale", "1 while the last pool ConfigMap seen was invalid", registry=r
        )
        self.condition_writes = Counter(
            "lbctl_condition_writes", "AnnouncedL2 and AnnouncedBGP condition writes, by result",
            ["result"], registry=r,
        )  # fmt: skip
        self.bgp_session_up = Gauge(
            "lbctl_bgp_session_up", "1 while this node's BGP session to the peer is Established",
            ["peer"], registry=r,
        )  # fmt: skip
        self.bgp_desired = Gauge(
            "lbctl_bgp_prefixes_desired", "Prefixes this node should announce to the peer",
            ["peer"], registry=r,
        )  # fmt: skip
        self.bgp_announced = Gauge(
            "lbctl_bgp_prefixes_announced", "Prefixes ExaBGP acknowledged for the peer while "
            "its session is Established", ["peer"], registry=r,
        )  # fmt: skip
        self.bgp_updates = Counter(
            "lbctl_bgp_updates_sent", "Announce and withdraw commands ExaBGP acknowledged, by "
            "peer", ["peer"], registry=r,
        )  # fmt: skip
        self.bgp_restarts = Counter(
            "lbctl_bgp_exabgp_restarts", "ExaBGP processes restarted, by peer and reason",
            ["peer", "reason"], registry=r,
        )  # fmt: skip
        self.bgp_errors = Counter(
            "lbctl_bgp_command_errors", "Commands ExaBGP refused or did not acknowledge in time",
            ["peer"], registry=r,
        )  # fmt: skip

    def set_announced(self, node: str, held: Mapping[IPAddress, HeldLike]) -> None:
        """Exactly one series per (ip, interface) this node announces now; `held` is kept
        (not copied), so the caller hands over a mapping it no longer changes."""
        before, self.announced.held = self.announced.held, held
        self.ownership_changes.inc(len(_pairs(before) ^ _pairs(held)))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _pairs(held: Mapping[IPAddress, HeldLike]) -> set[tuple[IPAddress, str]]:
    return {(ip, h.interface) for h in held.values() for ip in h.ips}
