"""Service defaulting and cluster IP / node port allocation; used by the store on writes."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypeVar

from lbctl.lab.api.errors import invalid

Body = dict[str, Any]
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
ServiceCIDRs = dict[str, IPNet]  # family -> range, the primary family first
_T = TypeVar("_T")

# Documentation ranges only (RFC 5737, RFC 3849): the bed never collides with real networks.
DOCS: tuple[IPNet, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
# IPv4 has room for only 253 Services; the IPv6 /108 (2^20 addresses, the largest range
# kube-apiserver accepts for IPv6) is the one 10,000-Service runs use, single-stack IPv6.
DEFAULT_SERVICE_CIDRS = ("198.51.100.0/24", "2001:db8:5::/108")
NODE_PORTS = range(30000, 32768)  # the real default --service-node-port-range
# Offsets skipped at the start of a range: the network address and the first host (the
# "kubernetes" Service on a real cluster); the last address is skipped too.
_FIRST = 2


def service_cidrs(cidrs: Iterable[str | IPNet]) -> ServiceCIDRs:
    """Parse `--service-cluster-ip-range`: one or two ranges, one per family, primary first."""
    out: ServiceCIDRs = {}
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr)
        family = "IPv6" if net.version == 6 else "IPv4"
        if family in out:
            raise ValueError(f"service CIDR {net}: a second {family} range")
        inside = (net.network_address in doc and net.broadcast_address in doc for doc in DOCS)
        if not any(inside):
            raise ValueError(f"service CIDR {net}: not inside a documentation range")
        if net.num_addresses < 4 or net.prefixlen < net.max_prefixlen - 20:
            raise ValueError(f"service CIDR {net}: must hold 4 to 2^20 addresses")
        out[family] = net
    if not out:
        raise ValueError("no service CIDR given")
    return out


def _parse_ip(text: Any) -> IPAddr | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class Allocations:
    """Cluster IPs and node ports held by stored Services, and next-free cursors.

    The store holds a Service's values when it stores the Service and releases them when it
    replaces or removes it, so checking and allocating cost O(the Service's ports), never
    O(Services). Allocation resumes after the last value handed out and wraps around: O(1)
    amortised while the range is not nearly full.
    """

    def __init__(self, cidrs: ServiceCIDRs, node_ports: range = NODE_PORTS) -> None:
        self.cidrs, self.node_ports = cidrs, node_ports
        self._ips: Counter[IPAddr] = Counter()  # a count: duplicates must not free early
        self._ports: Counter[int] = Counter()
        self._ip_cursor = dict.fromkeys(cidrs, 0)
        self._port_cursor = 0

    def held_ip(self, ip: IPAddr) -> bool:
        return ip in self._ips

    def held_port(self, port: int) -> bool:
        return port in self._ports

    def held(self) -> tuple[set[IPAddr], set[int]]:
        """Every cluster IP and node port some stored Service holds (for checks and tests)."""
        return set(self._ips), set(self._ports)

    def hold(self, svc: Body) -> None:
        ips, ports = _holdings(svc)
        self._ips.update(ips)
        self._ports.update(ports)

    def release(self, svc: Body) -> None:
        ips, ports = _holdings(svc)
        _forget(self._ips, ips)
        _forget(self._ports, ports)

    def next_ip(self, family: str, claimed: set[IPAddr]) -> IPAddr | None:
        """The first free address at or after the cursor, wrapping; None if the range is full."""
        net = self.cidrs[family]
        size = net.num_addresses - _FIRST - 1
        start = self._ip_cursor[family]
        for step in range(size):
            offset = (start + step) % size
            ip = net.network_address + (_FIRST + offset)
            if ip not in self._ips and ip not in claimed:
                self._ip_cursor[family] = (offset + 1) % size
                return ip
        return None

    def next_port(self, claimed: set[int]) -> int | None:
        """The first free node port at or after the cursor, wrapping; None if all are taken."""
        size = len(self.node_ports)
        for step in range(size):
            offset = (self._port_cursor + step) % size
            port = self.node_ports[offset]
            if port not in self._ports and port not in claimed:
                self._port_cursor = (offset + 1) % size
                return port
        return None


def _forget(held: Counter[_T], values: list[_T]) -> None:
    for value in values:
        held[value] -= 1
        if held[value] <= 0:
            del held[value]


def _holdings(svc: Body) -> tuple[list[IPAddr], list[int]]:
    spec = svc.get("spec") or {}
    ips = [ip for text in spec.get("clusterIPs") or [] if (ip := _parse_ip(text)) is not None]
    ports = [p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort")]
    if spec.get("healthCheckNodePort"):
        ports.append(spec["healthCheckNodePort"])
    return ips, ports


def _fail(obj: Body, field: str, msg: str) -> Exception:
    return invalid("Service", "", obj["metadata"].get("name", ""), [(field, msg)])


def default_service(obj: Body, old: Body | None, alloc: Allocations) -> Body:
    """Fill, in place, the fields a real API server fills, allocating what no Service holds.

    The store passes a fresh copy it owns and holds the result's values once it stores it:
    `alloc` is only read here (a write that then fails validation allocates nothing).
    """
    spec = obj.setdefault("spec", {})
    old_spec = (old or {}).get("spec") or {}
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if stype == "ExternalName":
        return obj
    spec.setdefault("internalTrafficPolicy", "Cluster")
    _default_cluster_ips(obj, old_spec, alloc)
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if stype == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        _default_node_ports(obj, old_spec, alloc)
    else:
        spec.pop("externalTrafficPolicy", None)
        spec.pop("healthCheckNodePort", None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    return obj


def _families(obj: Body, given: list[str], cidrs: ServiceCIDRs) -> list[str]:
    """ipFamilies as the real server settles them: given, else from the IPs, else the cluster's."""
    spec = obj["spec"]
    policy = spec.setdefault("ipFamilyPolicy", "SingleStack")
    from_ips = []
    for i, text in enumerate(given):
        if text != "None":
            if (ip := _parse_ip(text)) is None:
                raise _fail(obj, f"spec.clusterIPs[{i}]", f"Invalid value: {text!r}: not an IP")
            from_ips.append("IPv6" if ip.version == 6 else "IPv4")
    families = list(
        spec.get("ipFamilies") or from_ips or list(cidrs)[: 1 if policy == "SingleStack" else 2]
    )
    if policy == "RequireDualStack" and len(families) == 1:
        families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    for i, family in enumerate(families):
        if family not in cidrs:
            raise _fail(
                obj,
                f"spec.ipFamilies[{i}]",
                f"Invalid value: {family!r}: not configured on this cluster",
            )
    return families


def _default_cluster_ips(obj: Body, old_spec: Body, alloc: Allocations) -> None:
    spec = obj["spec"]
    if old_spec.get("clusterIPs") and not spec.get("clusterIP"):
        # An update without the allocated values keeps them, as the real server does.
        spec["clusterIP"] = old_spec["clusterIP"]
        spec["clusterIPs"] = list(old_spec["clusterIPs"])
        spec.setdefault("ipFamilies", list(old_spec.get("ipFamilies") or []))
        spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy", "SingleStack"))
        return
    given = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    spec["ipFamilies"] = families = _families(obj, given, alloc.cidrs)
    if given == ["None"]:
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
        return
    mine = {_parse_ip(ip) for ip in old_spec.get("clusterIPs") or []}
    claimed: set[IPAddr] = set()
    texts = []
    for i, family in enumerate(families):
        if i < len(given):
            text, ip = given[i], _parse_ip(given[i])
        else:
            ip = alloc.next_ip(family, claimed)
            if ip is None:
                raise _fail(obj, "spec.clusterIPs", f"range {alloc.cidrs[family]} is full")
            text = str(ip)
        if ip is None or ip not in alloc.cidrs[family]:
            raise _fail(
                obj,
                "spec.clusterIPs",
                f"Invalid value: {text!r}: provided IP is not in the valid range",
            )
        if (alloc.held_ip(ip) or ip in claimed) and ip not in mine:
            raise _fail(
                obj, "spec.clusterIPs", f"Invalid value: {text!r}: provided IP is already allocated"
            )
        claimed.add(ip)
        texts.append(text)
    spec["clusterIP"], spec["clusterIPs"] = texts[0], texts


def _default_node_ports(obj: Body, old_spec: Body, alloc: Allocations) -> None:
    spec = obj["spec"]
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
    allocate = spec.get("type") != "LoadBalancer" or spec.get("allocateLoadBalancerNodePorts")
    mine = {p.get("nodePort") for p in old_ports.values()} | {old_spec.get("healthCheckNodePort")}
    claimed: set[int] = set()
    for i, port in enumerate(spec.get("ports") or []):
        prev = old_ports.get((port.get("port"), port.get("protocol")), {})
        if not port.get("nodePort") and prev.get("nodePort"):
            port["nodePort"] = prev["nodePort"]
        if port.get("nodePort"):
            _claim(obj, f"spec.ports[{i}].nodePort", port["nodePort"], (alloc, claimed), mine)
        elif allocate:
            port["nodePort"] = _free_port(obj, alloc, claimed)
    if spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
        hc = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
        if hc:
            _claim(obj, "spec.healthCheckNodePort", hc, (alloc, claimed), mine)
        spec["healthCheckNodePort"] = hc or _free_port(obj, alloc, claimed)
    else:
        spec.pop("healthCheckNodePort", None)


def _claim(
    obj: Body, field: str, port: int, taken: tuple[Allocations, set[int]], mine: set[Any]
) -> None:
    alloc, claimed = taken
    if port not in alloc.node_ports:
        raise _fail(
            obj,
            field,
            f"Invalid value: {port}: provided port is not in the valid range. The range of "
            f"valid ports is {alloc.node_ports.start}-{alloc.node_ports.stop - 1}",
        )
    if (alloc.held_port(port) or port in claimed) and port not in mine:
        raise _fail(obj, field, f"Invalid value: {port}: provided port is already allocated")
    claimed.add(port)


def _free_port(obj: Body, alloc: Allocations, claimed: set[int]) -> int:
    port = alloc.next_port(claimed)
    if port is None:
        raise _fail(obj, "spec.ports", "node port range is full")
    claimed.add(port)
    return port
