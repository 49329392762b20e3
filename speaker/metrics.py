"""The speaker's Prometheus metrics (prefix `lbctl_`), one registry per speaker; bumped by the
agent, the data plane and the announcer's hooks, served by lbctl.health.HealthServer.

Per-IP series are removed when the IP leaves this node or its Service goes, so nothing stale
stays behind (MetalLB #1972, #1342).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from lbctl.core.model import IPAddress


class HeldLike(Protocol):
    @property
    def ips(self) -> tuple[IPAddress, ...]: ...

    @property
    def interface(self) -> str: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.announced = Gauge(
            "lbctl_l2_announced", "1 for each IP this node announces, by interface",
            ["ip", "interface"], registry=r,
        )  # fmt: skip
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
        self._series: set[tuple[str, str]] = set()

    def set_announced(self, node: str, held: Mapping[IPAddress, HeldLike]) -> None:
        """Exactly one series per (ip, interface) this node announces now."""
        want = {(str(ip), h.interface) for h in held.values() for ip in h.ips}
        for ip, iface in self._series - want:
            self.announced.remove(ip, iface)
        for ip, iface in want - self._series:
            self.announced.labels(ip=ip, interface=iface).set(1)
        self.ownership_changes.inc(len(want ^ self._series))
        self._series = want

    def render(self) -> bytes:
        return generate_latest(self.registry)
