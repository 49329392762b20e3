"""Warnings about a valid config near the hosts (node IPs, gateway); called by CLI, controller."""

from __future__ import annotations

from collections.abc import Iterable

from lbctl.core.model import Config, ConfigIssue, IPAddress, Severity
from lbctl.core.parse_common import at, quote


def check_pools_against_hosts(
    config: Config, node_ips: Iterable[IPAddress], gateways: Iterable[IPAddress]
) -> tuple[ConfigIssue, ...]:
    """A pool range holding a node's InternalIP or the LAN gateway is a warning, naming both.

    Handing such an address to a Service would make lbctl answer ARP/NDP for the node or the
    gateway and cut the LAN off from it.
    """
    roles = [(ip, "a node's InternalIP") for ip in sorted(set(node_ips), key=_order)]
    roles += [(ip, "the LAN gateway") for ip in sorted(set(gateways), key=_order)]
    issues: list[ConfigIssue] = []
    for pool in config.pools:
        for i, r in enumerate(pool.ranges):
            where = at(at(f"pool {quote(pool.name)}", "addresses"), i)
            issues.extend(
                ConfigIssue(where, f"{quote(r.text)} contains {ip}, {role}", Severity.WARNING)
                for ip, role in roles
                if ip in r
            )
    return tuple(issues)


def _order(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)
