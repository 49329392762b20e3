"""The bed's naming and address plan, pure values; used by the topology, the kubelet and tests."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

RunId = NewType("RunId", str)

NS_PREFIX = "lbctl-"
RUN_ROOT = Path("/run/lbctl/lab")
# Kernel limit: IFNAMSIZ is 16 bytes with the NUL, and every bridge port is named "p-<role>".
MAX_IFNAME = 15
POD_SLOTS = 6  # addresses of a /29 but its network and broadcast
MAX_POD_NODES = 15  # one /29 of pod addresses per node inside PODS4: nodes 1..15 run pods
# Nodes 16..30 are probe-only (the L2 bench's speakers without pods): 192.0.2.11-40.
MAX_NODES = 30

LAN4 = ipaddress.IPv4Network("192.0.2.0/24")
LAN6 = ipaddress.IPv6Network("2001:db8::/64")
GATEWAY4 = ipaddress.IPv4Address("192.0.2.1")
GATEWAY6 = ipaddress.IPv6Address("2001:db8::1")
# The far side of the router. Only its lower half: 203.0.113.128/25 stays free for BGP VIPs,
# which must not look on-link to the far client.
FAR4 = ipaddress.IPv4Network("203.0.113.0/25")
FAR6 = ipaddress.IPv6Network("2001:db8:1::/64")
FAR_GATEWAY4 = ipaddress.IPv4Address("203.0.113.1")
FAR_GATEWAY6 = ipaddress.IPv6Address("2001:db8:1::1")
# Pods and Services split 198.51.100.0/24: pods the lower half (a /29 per node), the Service
# cluster IPs the upper half (controlplane.SERVICE_CIDRS), so the two never overlap.
PODS4 = ipaddress.IPv4Network("198.51.100.0/25")
# Suggested pools for tests and the lab; nothing in the bed owns these addresses.
L2_VIPS4 = (ipaddress.IPv4Address("192.0.2.200"), ipaddress.IPv4Address("192.0.2.250"))
L2_VIPS6 = (ipaddress.IPv6Address("2001:db8::200"), ipaddress.IPv6Address("2001:db8::250"))
BGP_VIPS4 = ipaddress.IPv4Network("203.0.113.192/26")
BGP_VIPS6 = ipaddress.IPv6Network("2001:db8:3::/48")  # on no link: routed through the router
ROUTER_ASN = 64500
NODE_ASN = 64501

_RUNID_RE = re.compile(r"^[0-9a-f]{4,12}$")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


class PlanError(ValueError):
    """A name or a size the plan cannot honour."""


def new_runid() -> RunId:
    """A short random hex id, so parallel tests and a running lab never share a name."""
    return RunId(secrets.token_hex(3))


def check_runid(runid: str) -> RunId:
    if not _RUNID_RE.match(runid):
        raise PlanError(f"run id {runid!r}: want 4-12 lowercase hex digits")
    return RunId(runid)


def ns_name(runid: RunId, role: str) -> str:
    """`lbctl-<runid>-<role>`, the shared namespace naming scheme (STYLE.md)."""
    if not _ROLE_RE.match(role):
        raise PlanError(f"role {role!r}: want a lowercase name of at most 12 characters")
    return f"{NS_PREFIX}{runid}-{role}"


def runid_of(netns: str) -> RunId | None:
    """The run id a bed namespace belongs to, or None for anybody else's namespace."""
    if not netns.startswith(NS_PREFIX):
        return None
    runid, _, role = netns[len(NS_PREFIX) :].partition("-")
    return RunId(runid) if _RUNID_RE.match(runid) and _ROLE_RE.match(role) else None


def run_dir(runid: RunId, root: Path = RUN_ROOT) -> Path:
    return root / runid


def port_name(role: str) -> str:
    """The bridge port (in the LAN namespace) facing a role's eth0."""
    name = f"p-{role}"
    if len(name) > MAX_IFNAME:
        raise PlanError(f"bridge port {name!r} is longer than {MAX_IFNAME} characters")
    return name


def node_name(index: int) -> str:
    return f"node-{index}"


@dataclass(frozen=True)
class Host:
    """One namespace on a link: its role, eth0 addresses (with prefix) and MAC."""

    role: str
    ip4: ipaddress.IPv4Interface
    ip6: ipaddress.IPv6Interface
    mac: str

    @property
    def addr4(self) -> ipaddress.IPv4Address:
        return self.ip4.ip

    @property
    def addr6(self) -> ipaddress.IPv6Address:
        return self.ip6.ip


def _mac(group: int, index: int) -> str:
    # Locally administered (02:...), readable in captures: group 1 = nodes, 2 = others.
    return f"02:00:00:00:{group:02x}:{index:02x}"


def _lan_host(role: str, host: int, group: int, index: int) -> Host:
    ip4 = ipaddress.IPv4Interface(f"{LAN4.network_address + host}/{LAN4.prefixlen}")
    ip6 = ipaddress.IPv6Interface(f"{LAN6.network_address + int(f'{host}', 16)}/{LAN6.prefixlen}")
    return Host(role=role, ip4=ip4, ip6=ip6, mac=_mac(group, index))


def node_host(index: int) -> Host:
    """node-i: 192.0.2.(10+i) and 2001:db8::(10+i), written in decimal digits in both."""
    if not 1 <= index <= MAX_NODES:
        raise PlanError(f"node index {index}: want 1..{MAX_NODES}")
    return _lan_host(node_name(index), 10 + index, 1, index)


ROUTER = _lan_host("router", 1, 2, 1)
CLIENT = _lan_host("client", 100, 2, 100)
OBSERVER = _lan_host("observer", 101, 2, 101)
FAR_CLIENT = Host(
    role="far",
    ip4=ipaddress.IPv4Interface(f"{FAR4.network_address + 100}/{FAR4.prefixlen}"),
    ip6=ipaddress.IPv6Interface(f"{FAR6.network_address + 0x100}/{FAR6.prefixlen}"),
    mac=_mac(3, 100),
)
ROUTER_FAR = Host(
    role="router",
    ip4=ipaddress.IPv4Interface(f"{FAR_GATEWAY4}/{FAR4.prefixlen}"),
    ip6=ipaddress.IPv6Interface(f"{FAR_GATEWAY6}/{FAR6.prefixlen}"),
    mac=_mac(3, 1),
)


def pod_network(node_index: int) -> ipaddress.IPv4Network:
    """The /29 of pod addresses routed to node-i (198.51.100.8*i/29)."""
    if not 1 <= node_index <= MAX_POD_NODES:
        raise PlanError(f"node index {node_index}: pods only on nodes 1..{MAX_POD_NODES}")
    return ipaddress.IPv4Network(f"{PODS4.network_address + 8 * node_index}/29")


def pod_address(node_index: int, slot: int) -> ipaddress.IPv4Address:
    """The slot-th pod address on node-i; slots 1..6 (network and broadcast stay unused)."""
    if not 1 <= slot <= POD_SLOTS:
        raise PlanError(f"pod slot {slot} on node-{node_index}: want 1..{POD_SLOTS}")
    return pod_network(node_index).network_address + slot
