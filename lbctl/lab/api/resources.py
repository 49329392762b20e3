"""The resource types the bed serves, and the discovery documents built from them; used by app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and how it is named."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource
    # Strategy on create: "keep" the given status, "reset" it, or drop it (no status at all).
    status_on_create: str = "keep"
    # Where generation lives: resources with a spec bump it on spec changes.
    has_spec: bool = True
    field_labels: frozenset[str] = field(default_factory=frozenset)
    categories: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> str:
        """Storage key: events in both API groups are stored apart (no conversion)."""
        return f"{self.group_version}/{self.plural}"

    def discovery(self) -> list[Body]:
        main: Body = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out = [main]
        if self.status:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)
NEW_EVENT_FIELDS = frozenset(
    {
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "regarding.fieldPath",
        "reason",
        "reportingController",
        "type",
    }
)

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        status=True,
        has_spec=False,
        field_labels=frozenset({"status.phase"}),
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        True,
        ("svc",),
        status=True,
        status_on_create="reset",
        categories=("all",),
    ),
    ResourceType("", "v1", "endpoints", "Endpoints", True, ("ep",), has_spec=False),
    ResourceType("", "v1", "nodes", "Node", False, ("no",), status=True),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        status=True,
        status_on_create="reset",
        field_labels=frozenset({"spec.nodeName", "status.phase", "status.podIP"}),
        categories=("all",),
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",), has_spec=False),
    ResourceType(
        "", "v1", "secrets", "Secret", True, has_spec=False, field_labels=frozenset({"type"})
    ),
    ResourceType(
        "", "v1", "events", "Event", True, ("ev",), has_spec=False, field_labels=EVENT_FIELDS
    ),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), has_spec=False),
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        ("ev",),
        has_spec=False,
        field_labels=NEW_EVENT_FIELDS,
    ),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, has_spec=False),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        ("deploy",),
        status=True,
        status_on_create="reset",
        categories=("all",),
    ),
    ResourceType(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        True,
        ("ds",),
        status=True,
        status_on_create="reset",
        categories=("all",),
    ),
)


class Registry:
    """Lookup of served resources by URL parts and discovery documents."""

    def __init__(self, resources: tuple[ResourceType, ...] = RESOURCES) -> None:
        self.resources = resources
        self._by_url = {(r.group, r.version, r.plural): r for r in resources}

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_url.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType:
        for res in self.resources:
            if res.key == key:
                return res
        raise KeyError(key)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for res in self.resources:
            if res.group and res.version not in out.setdefault(res.group, []):
                out[res.group].append(res.version)
        return out

    def api_versions(self, server_address: str) -> Body:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    def api_group(self, group: str) -> Body | None:
        versions = self.groups().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": gvs,
            "preferredVersion": gvs[0],
        }

    def api_group_list(self) -> Body:
        groups = [self.api_group(g) for g in self.groups()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in groups if g]}

    def resource_list(self, group: str, version: str) -> Body | None:
        found = [r for r in self.resources if (r.group, r.version) == (group, version)]
        if not found:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": found[0].group_version,
            "resources": [doc for r in found for doc in r.discovery()],
        }

    def root_paths(self) -> Body:
        paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/readyz", "/livez"}
        for group, versions in self.groups().items():
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{v}" for v in versions)
        return {"paths": sorted(paths)}


VERSION_INFO: Body = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-lbctl-bed",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
