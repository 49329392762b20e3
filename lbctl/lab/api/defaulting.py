"""Service defaulting and cluster IP / node port allocation; used by the store on writes."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable
from typing import Any

from lbctl.lab.api.errors import invalid

Body = dict[str, Any]
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

# Documentation ranges only (RFC 5737, RFC 3849): the bed never collides with real networks.
SERVICE_CIDRS: dict[str, IPNet] = {
    "IPv4": ipaddress.ip_network("198.51.100.0/24"),
    "IPv6": ipaddress.ip_network("2001:db8:5::/112"),
}
NODE_PORTS = range(30000, 32768)  # the real default --service-node-port-range


def _family(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


def _used(others: Iterable[Body]) -> tuple[set[str], set[int]]:
    ips: set[str] = set()
    ports: set[int] = set()
    for svc in others:
        spec = svc.get("spec") or {}
        ips.update(ip for ip in spec.get("clusterIPs") or [] if ip and ip != "None")
        ports.update(p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort"))
        if spec.get("healthCheckNodePort"):
            ports.add(spec["healthCheckNodePort"])
    return ips, ports


def _fail(obj: Body, field: str, msg: str) -> Exception:
    return invalid("Service", "", obj["metadata"].get("name", ""), [(field, msg)])


def default_service(new: Body, old: Body | None, others: Iterable[Body]) -> Body:
    """Fill the fields a real API server fills, allocating from what `others` do not hold."""
    obj = copy.deepcopy(new)
    spec = obj.setdefault("spec", {})
    old_spec = (old or {}).get("spec") or {}
    used_ips, used_ports = _used(others)
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if stype == "ExternalName":
        return obj
    spec.setdefault("internalTrafficPolicy", "Cluster")
    _default_cluster_ips(obj, old_spec, used_ips)
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if stype == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        _default_node_ports(obj, old_spec, used_ports)
    else:
        spec.pop("externalTrafficPolicy", None)
        spec.pop("healthCheckNodePort", None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    return obj


def _default_cluster_ips(obj: Body, old_spec: Body, used: set[str]) -> None:
    spec = obj["spec"]
    if old_spec.get("clusterIPs") and not spec.get("clusterIP"):
        # An update without the allocated values keeps them, as the real server does.
        spec["clusterIP"] = old_spec["clusterIP"]
        spec["clusterIPs"] = list(old_spec["clusterIPs"])
        spec.setdefault("ipFamilies", list(old_spec.get("ipFamilies") or []))
        spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy", "SingleStack"))
        return
    policy = spec.setdefault("ipFamilyPolicy", "SingleStack")
    given = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    families = spec.get("ipFamilies") or (
        [_family(ip) for ip in given if ip != "None"]
        or (["IPv4", "IPv6"] if policy != "SingleStack" else ["IPv4"])
    )
    if policy == "RequireDualStack" and len(families) == 1:
        families = [families[0], "IPv6" if families[0] == "IPv4" else "IPv4"]
    spec["ipFamilies"] = families
    if given == ["None"]:
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
        return
    ips = []
    for i, family in enumerate(families):
        ip = given[i] if i < len(given) else _allocate_ip(obj, family, used)
        if ipaddress.ip_address(ip) not in SERVICE_CIDRS[family]:
            raise _fail(
                obj,
                "spec.clusterIPs",
                f"Invalid value: {ip!r}: provided IP is not in the valid range",
            )
        if ip in used and ip not in old_spec.get("clusterIPs", []):
            raise _fail(
                obj, "spec.clusterIPs", f"Invalid value: {ip!r}: provided IP is already allocated"
            )
        used.add(ip)
        ips.append(ip)
    spec["clusterIP"], spec["clusterIPs"] = ips[0], ips


def _allocate_ip(obj: Body, family: str, used: set[str]) -> str:
    net = SERVICE_CIDRS[family]
    # Skip the network address and the first host (the "kubernetes" Service on a real cluster).
    for offset in range(2, min(net.num_addresses - 1, 65536)):
        ip = str(net.network_address + offset)
        if ip not in used:
            return ip
    raise _fail(obj, "spec.clusterIPs", f"range {net} is full")


def _default_node_ports(obj: Body, old_spec: Body, used: set[int]) -> None:
    spec = obj["spec"]
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
    allocate = spec.get("type") != "LoadBalancer" or spec.get("allocateLoadBalancerNodePorts")
    mine = {p.get("nodePort") for p in old_ports.values()} | {old_spec.get("healthCheckNodePort")}
    for i, port in enumerate(spec.get("ports") or []):
        prev = old_ports.get((port.get("port"), port.get("protocol")), {})
        if not port.get("nodePort") and prev.get("nodePort"):
            port["nodePort"] = prev["nodePort"]
        if port.get("nodePort"):
            _claim(obj, f"spec.ports[{i}].nodePort", port["nodePort"], used, mine)
        elif allocate:
            port["nodePort"] = _free_port(obj, used)
    if spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
        hc = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
        if hc:
            _claim(obj, "spec.healthCheckNodePort", hc, used, mine)
        spec["healthCheckNodePort"] = hc or _free_port(obj, used)
    else:
        spec.pop("healthCheckNodePort", None)


def _claim(obj: Body, field: str, port: int, used: set[int], mine: set[Any]) -> None:
    if port not in NODE_PORTS:
        raise _fail(
            obj,
            field,
            f"Invalid value: {port}: provided port is not in the valid "
            "range. The range of valid ports is 30000-32767",
        )
    if port in used and port not in mine:
        raise _fail(obj, field, f"Invalid value: {port}: provided port is already allocated")
    used.add(port)


def _free_port(obj: Body, used: set[int]) -> int:
    for port in NODE_PORTS:
        if port not in used:
            used.add(port)
            return port
    raise _fail(obj, "spec.ports", "node port range is full")
