"""Validation the real API server does that the bed's clients can trip over; used by the store."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from lbctl.lab.api.errors import ApiError, invalid
from lbctl.lab.api.resources import ResourceType

Body = dict[str, Any]
Causes = list[tuple[str, str]]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# metav1.Condition.reason: CamelCase-ish, as the real validation regex.
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
CONDITION_STATUSES = ("True", "False", "Unknown")
# Resources whose status.conditions are metav1.Condition (all five fields required).
STRICT_CONDITIONS = frozenset({"v1/services"})


def check_name(res: ResourceType, name: str) -> None:
    if res.plural in {"services", "namespaces"}:
        ok, rule = bool(_LABEL_1035.match(name)) and len(name) <= 63, "RFC 1035 label"
        if res.plural == "namespaces":
            ok = bool(re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name)) and len(name) <= 63
    else:
        ok, rule = bool(_SUBDOMAIN.match(name)) and len(name) <= 253, "RFC 1123 subdomain"
    if not ok:
        raise invalid(
            res.kind,
            res.group,
            name,
            [("metadata.name", f"Invalid value: {name!r}: a lowercase {rule} must be valid")],
        )


def validate(res: ResourceType, obj: Body) -> None:
    """Raise a 422 listing every problem found, like the real server's field.ErrorList."""
    causes: Causes = []
    status = obj.get("status")
    if isinstance(status, dict) and status.get("conditions") is not None:
        causes += _conditions(status["conditions"], strict=res.key in STRICT_CONDITIONS)
    if res.key == "v1/services":
        causes += _service(obj)
    if causes:
        meta = obj.get("metadata", {})
        raise invalid(res.kind, res.group, str(meta.get("name", "")), causes)


def _conditions(conditions: Any, *, strict: bool) -> Causes:
    if not isinstance(conditions, list):
        return [("status.conditions", "must be a list")]
    causes: Causes = []
    seen: set[str] = set()
    for i, cond in enumerate(conditions):
        path = f"status.conditions[{i}]"
        if not isinstance(cond, dict):
            causes.append((path, "must be an object"))
            continue
        ctype = cond.get("type")
        if not ctype or not isinstance(ctype, str):
            causes.append((f"{path}.type", "Required value"))
        elif strict and not _QUALIFIED.match(ctype):
            causes.append((f"{path}.type", f"Invalid value: {ctype!r}: must be a qualified name"))
        elif ctype in seen:
            causes.append((f"{path}.type", f"Duplicate value: {ctype!r}"))
        seen.add(str(ctype))
        if cond.get("status") not in CONDITION_STATUSES:
            causes.append(
                (
                    f"{path}.status",
                    f"Unsupported value: {cond.get('status')!r}: "
                    'supported values: "False", "True", "Unknown"',
                )
            )
        if strict:
            causes += _strict_condition(cond, path)
    return causes


def _strict_condition(cond: Body, path: str) -> Causes:
    causes: Causes = []
    reason = cond.get("reason")
    if not reason:
        causes.append((f"{path}.reason", "Required value"))
    elif not isinstance(reason, str) or not _REASON.match(reason) or len(reason) > 1024:
        causes.append(
            (
                f"{path}.reason",
                f"Invalid value: {reason!r}: a condition reason must "
                "start with alphabetic character, optionally followed by a string of "
                "alphanumeric characters or '_,:', and must end with an alphanumeric "
                "character or '_'",
            )
        )
    ltt = cond.get("lastTransitionTime")
    if not ltt:
        causes.append((f"{path}.lastTransitionTime", "Required value"))
    elif not isinstance(ltt, str) or not _TIME.match(ltt):
        causes.append((f"{path}.lastTransitionTime", f"Invalid value: {ltt!r}: not RFC 3339"))
    if len(str(cond.get("message", ""))) > 32768:
        causes.append((f"{path}.message", "Too long: may not be more than 32768 bytes"))
    gen = cond.get("observedGeneration")
    if gen is not None and (not isinstance(gen, int) or gen < 0):
        causes.append((f"{path}.observedGeneration", "must be greater than or equal to zero"))
    return causes


SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
PROTOCOLS = ("TCP", "UDP", "SCTP")


def _service(obj: Body) -> Causes:
    spec = obj.get("spec") or {}
    causes: Causes = []
    if spec.get("type", "ClusterIP") not in SERVICE_TYPES:
        causes.append(("spec.type", f"Unsupported value: {spec.get('type')!r}"))
    ports = spec.get("ports") or []
    names = [p.get("name", "") for p in ports if isinstance(p, dict)]
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        number = port.get("port") if isinstance(port, dict) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append((f"{path}.port", f"Invalid value: {number!r}: must be 1-65535"))
            continue
        if port.get("protocol", "TCP") not in PROTOCOLS:
            causes.append((f"{path}.protocol", f"Unsupported value: {port.get('protocol')!r}"))
        if len(ports) > 1 and not port.get("name"):
            causes.append((f"{path}.name", "Required value"))
        elif port.get("name") and names.count(port["name"]) > 1:
            causes.append((f"{path}.name", f"Duplicate value: {port['name']!r}"))
    causes += _ingress((obj.get("status") or {}).get("loadBalancer") or {})
    return causes


def _ingress(lb: Body) -> Causes:
    causes: Causes = []
    for i, ing in enumerate(lb.get("ingress") or []):
        path = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(ing, dict):
            causes.append((path, "must be an object"))
            continue
        if "ip" in ing:
            try:
                ipaddress.ip_address(ing["ip"])
            except ValueError:
                causes.append((f"{path}.ip", f"Invalid value: {ing['ip']!r}: must be a valid IP"))
        if ing.get("ipMode") not in (None, "VIP", "Proxy"):
            causes.append((f"{path}.ipMode", f"Unsupported value: {ing['ipMode']!r}"))
    return causes


def require(cond: bool, code: int, message: str) -> None:
    if not cond:
        raise ApiError(code, message)
