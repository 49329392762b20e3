"""Builders shared by the allocator tests (no tests here): pools, configs, requests from text."""

from __future__ import annotations

import ipaddress
from typing import Any

from lbctl.core.allocator import Allocator, Assignment, Failure, Result
from lbctl.core.model import (
    AddressRange,
    AllocationScope,
    Config,
    Family,
    IPAddress,
    Pool,
    PoolName,
    ServiceKey,
    ServicePort,
    ServiceRequest,
)


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def rng(text: str) -> AddressRange:
    """`a-b` or a CIDR."""
    if "-" in text:
        a, b = text.split("-")
        return AddressRange(ip(a), ip(b), text)
    net = ipaddress.ip_network(text)
    return AddressRange(net[0], net[-1], text)


def pool(
    name: str,
    *ranges: str,
    auto: bool = True,
    avoid: bool = False,
    scope: AllocationScope | None = None,
) -> Pool:
    return Pool(PoolName(name), tuple(rng(r) for r in ranges), auto, avoid, scope)


def config(*pools: Pool, allow_renumber: bool = False) -> Config:
    return Config(pools=pools, allow_renumber=allow_renumber)


def svc(name: str, ns: str = "ns", **kw: Any) -> ServiceRequest:
    if "requested_ips" in kw:
        kw["requested_ips"] = tuple(ip(x) for x in kw["requested_ips"])
    if "ports" in kw:
        kw["ports"] = tuple(ServicePort(p.split("/")[0], int(p.split("/")[1])) for p in kw["ports"])
    if "families" in kw:
        kw["families"] = tuple(Family(f) for f in kw["families"])
    if "pool" in kw:
        kw["pool"] = PoolName(kw["pool"])
    return ServiceRequest(ServiceKey(f"{ns}/{name}"), **kw)


def ips(result: Result | None) -> tuple[str, ...]:
    assert isinstance(result, Assignment), result
    return tuple(str(x) for x in result.ips)


def failed(result: Result) -> Failure:
    assert isinstance(result, Failure), result
    return result


def key(name: str, ns: str = "ns") -> ServiceKey:
    return ServiceKey(f"{ns}/{name}")


def fill(alloc: Allocator, count: int, prefix: str = "fill") -> list[Result]:
    return [alloc.allocate(svc(f"{prefix}{i}", created=f"0-{i:05d}")) for i in range(count)]
