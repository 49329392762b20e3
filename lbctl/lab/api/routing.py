"""Parse Kubernetes API URLs into a Target (resource, namespace, name, subresource); used by app."""

from __future__ import annotations

from dataclasses import dataclass

from lbctl.lab.api.errors import ApiError
from lbctl.lab.api.resources import Registry, ResourceType

NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclass(frozen=True)
class Target:
    """What a request addresses: discovery (res None) or a collection/object of `res`."""

    group: str
    version: str
    res: ResourceType | None
    namespace: str | None = None
    name: str | None = None
    sub: str = ""


def parse(registry: Registry, path: str) -> Target | None:
    """None for non-API paths; raises 404 for unknown resources under /api or /apis."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        if len(parts) < 2:
            return None
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return Target(group, version, None)
    namespace = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and rest[2] not in NAMESPACE_SUBRESOURCES
        and group + version + rest[0] != ""
    ):
        namespace, rest = rest[1], rest[2:]
    res = registry.find(group, version, rest[0])
    if res is None or len(rest) > 3 or (namespace is not None and not res.namespaced):
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if sub and (sub != "status" or not res.status):
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return Target(group, version, res, namespace, name, sub)
