"""Server-side Table rendering (meta.k8s.io/v1 Table) for `kubectl get`; used by handlers."""

from __future__ import annotations

import calendar
import time
from typing import Any

from lbctl.lab.api.resources import ResourceType

Body = dict[str, Any]


def wants_table(accept: str) -> bool:
    """True if the Accept header asks for a Table first (kubectl's get/watch)."""
    first = accept.split(",", maxsplit=1)[0] if accept else ""
    params = {p.strip() for p in first.split(";")[1:]}
    return "as=Table" in params and "g=meta.k8s.io" in params


def age(created: str | None, now: float | None = None) -> str:
    """Duration as kubectl prints it (`45s`, `3m2s`, `5h`, `2d3h`), from a RFC 3339 stamp."""
    if not created:
        return "<unknown>"
    try:
        then = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    secs = max(0, int((now if now is not None else time.time()) - then))
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"


def _col(name: str, typ: str = "string", fmt: str = "", priority: int = 0) -> Body:
    return {"name": name, "type": typ, "format": fmt, "description": name, "priority": priority}


GENERIC_COLUMNS = [_col("Name", fmt="name"), _col("Age", "date")]
SERVICE_COLUMNS = [
    _col("Name", fmt="name"),
    _col("Type"),
    _col("Cluster-IP"),
    _col("External-IP"),
    _col("Port(s)"),
    _col("Age"),
    _col("Selector", priority=1),
]


def _external_ip(spec: Body, status: Body) -> str:
    stype = spec.get("type", "ClusterIP")
    extra = list(spec.get("externalIPs") or [])
    if stype == "ExternalName":
        return str(spec.get("externalName", "<none>"))
    if stype == "LoadBalancer":
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        ips = [i.get("ip") or i.get("hostname") for i in ingress] + extra
        return ",".join(str(i) for i in ips if i) or "<pending>"
    return ",".join(extra) or "<none>"


def _ports(spec: Body) -> str:
    out = []
    for port in spec.get("ports") or []:
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        out.append(f"{port.get('port')}{node}/{port.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def service_cells(obj: Body) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [
        obj["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        _external_ip(spec, status),
        _ports(spec),
        age(obj["metadata"].get("creationTimestamp")),
        selector or "<none>",
    ]


def _row(res: ResourceType, obj: Body, include: str) -> Body:
    if res.plural == "services" and res.group == "":
        cells = service_cells(obj)
    else:
        cells = [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp"))]
    row: Body = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
    return row


def table(res: ResourceType, objs: list[Body], meta: Body, include: str = "Metadata") -> Body:
    """A Table of `objs`; `include` is the includeObject parameter (None/Metadata/Object)."""
    is_svc = res.plural == "services" and res.group == ""
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": SERVICE_COLUMNS if is_svc else GENERIC_COLUMNS,
        "rows": [_row(res, obj, include) for obj in objs],
    }
