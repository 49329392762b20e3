"""What kube-controller-manager would compute, as pure functions over API bodies: pods for
Deployments, scheduling, EndpointSlices, Node bodies; used by the lab kubelet."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]

HOSTNAME_LABEL = "kubernetes.io/hostname"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
DEFAULT_CONTAINER_PORT = 8080
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the one Kubernetes uses for generated names


def key_of(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta["name"])


def labels_of(body: Mapping[str, Any]) -> dict[str, str]:
    return dict((body.get("metadata") or {}).get("labels") or {})


def matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A Service-style equality selector; an empty or missing selector selects nothing."""
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(length))


def template_hash(deployment: Mapping[str, Any]) -> str:
    """A stable short hash of the pod template (the pod-template-hash label)."""
    raw = repr(sorted(((deployment.get("spec") or {}).get("template") or {}).items()))
    return hashlib.sha256(raw.encode()).hexdigest()[:10]


def owned_by(pod: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    dep_ns, dep_name = key_of(deployment)
    return key_of(pod)[0] == dep_ns and any(
        r.get("kind") == "Deployment" and r.get("name") == dep_name for r in refs
    )


def owner_deployment(pod: Mapping[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Deployment":
            return str(ref.get("name"))
    return None


def container_ports(pod_or_template_spec: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(name, containerPort) of every TCP port the containers declare; the default if none."""
    found = [
        (str(p.get("name", "")), int(p["containerPort"]))
        for c in pod_or_template_spec.get("containers") or []
        for p in c.get("ports") or []
        if str(p.get("protocol", "TCP")) == "TCP" and "containerPort" in p
    ]
    return found or [("", DEFAULT_CONTAINER_PORT)]


def pod_for(deployment: Mapping[str, Any], node: str) -> Body:
    """A new Pod body for one replica of `deployment`, bound to `node` (no scheduler round-trip)."""
    ns, name = key_of(deployment)
    template = (deployment.get("spec") or {}).get("template") or {}
    labels = {**labels_of(template), "pod-template-hash": template_hash(deployment)}
    uid = (deployment.get("metadata") or {}).get("uid")
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "controller": True}
    if uid:
        owner["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-{random_suffix()}",
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {**(template.get("spec") or {}), "nodeName": node},
    }


def schedule(count: int, ready_nodes: Sequence[str], load: Mapping[str, int]) -> list[str]:
    """Nodes for `count` new pods: round-robin over Ready nodes, least-loaded first, by name."""
    if not ready_nodes:
        return []
    counts = {n: load.get(n, 0) for n in ready_nodes}
    chosen: list[str] = []
    for _ in range(count):
        node = min(sorted(counts), key=lambda n: counts[n])
        chosen.append(node)
        counts[node] += 1
    return chosen


def excess(pods: Sequence[Mapping[str, Any]], replicas: int) -> list[Mapping[str, Any]]:
    """Pods to delete when there are more than `replicas`: not-ready ones first, then newest."""
    if len(pods) <= replicas:
        return []

    def created(pod: Mapping[str, Any]) -> tuple[str, str]:
        meta = pod.get("metadata") or {}
        return str(meta.get("creationTimestamp", "")), str(meta.get("name"))

    newest_first = sorted(pods, key=created, reverse=True)
    ordered = sorted(newest_first, key=pod_ready)  # stable: False (not ready) first
    return ordered[: len(pods) - replicas]


def condition(body: Mapping[str, Any], kind: str) -> str | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return condition(pod, "Ready") == "True"


def node_ready(node: Mapping[str, Any]) -> bool:
    return condition(node, "Ready") == "True"


def schedulable(node: Mapping[str, Any]) -> bool:
    taints = (node.get("spec") or {}).get("taints") or []
    unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
    return (
        node_ready(node)
        and not unschedulable
        and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)
    )


@dataclass(frozen=True)
class Endpoint:
    """One pod as an endpoint: what the EndpointSlice and the proxies need."""

    namespace: str
    pod: str
    uid: str
    node: str
    ip: str
    labels: Mapping[str, str]
    ports: tuple[tuple[str, int], ...]  # container (name, port)
    ready: bool

    def target_port(self, target: int | str) -> int | None:
        if isinstance(target, int):
            return target
        if target.isdigit():
            return int(target)
        return next((port for name, port in self.ports if name == target), None)


def service_ports(service: Mapping[str, Any]) -> list[tuple[str, int, int | str]]:
    """(name, port, targetPort) of each TCP port of a Service; targetPort defaults to port."""
    return [
        (str(p.get("name", "")), int(p["port"]), p.get("targetPort", p["port"]))
        for p in (service.get("spec") or {}).get("ports") or []
        if str(p.get("protocol", "TCP")) == "TCP"
    ]


def selected(service: Mapping[str, Any], endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    ns, _ = key_of(service)
    selector = (service.get("spec") or {}).get("selector")
    return sorted(
        (e for e in endpoints if e.namespace == ns and matches(selector, e.labels)),
        key=lambda e: e.pod,
    )


def endpoint_slice(service: Mapping[str, Any], endpoints: Iterable[Endpoint]) -> Body:
    """The EndpointSlice of a selector Service (one slice, IPv4 pod addresses)."""
    ns, name = key_of(service)
    chosen = selected(service, endpoints)
    ports = [
        {"name": pname, "port": _resolve(target, chosen), "protocol": "TCP"}
        for pname, _port, target in service_ports(service)
    ]
    meta: Body = {
        "name": f"{name}-lab",
        "namespace": ns,
        "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
    }
    uid = (service.get("metadata") or {}).get("uid")
    if uid:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid, "controller": True}
        ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [_endpoint_body(e) for e in chosen],
        "ports": [p for p in ports if p["port"] is not None],
    }


def _resolve(target: int | str, chosen: Sequence[Endpoint]) -> int | None:
    for ep in chosen:
        if (port := ep.target_port(target)) is not None:
            return port
    return target if isinstance(target, int) else None


def _endpoint_body(ep: Endpoint) -> Body:
    return {
        "addresses": [ep.ip],
        "conditions": {"ready": ep.ready, "serving": ep.ready, "terminating": False},
        "nodeName": ep.node,
        "targetRef": {"kind": "Pod", "namespace": ep.namespace, "name": ep.pod, "uid": ep.uid},
    }


def _slice_essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parts of a slice the kubelet writes, normalised, so server defaults never look like
    a change (a spurious patch would wake our own watch and loop)."""
    endpoints = tuple(
        (
            tuple(e.get("addresses") or ()),
            tuple(
                bool((e.get("conditions") or {}).get(k))
                for k in ("ready", "serving", "terminating")
            ),
            e.get("nodeName"),
            (e.get("targetRef") or {}).get("name"),
        )
        for e in body.get("endpoints") or ()
    )
    ports = tuple(
        (p.get("name") or "", p.get("port"), p.get("protocol") or "TCP")
        for p in body.get("ports") or ()
    )
    return endpoints, ports


def slice_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the parts the kubelet owns (endpoints, ports, labels) differ."""
    have_labels = labels_of(current)
    return _slice_essence(current) != _slice_essence(desired) or any(
        have_labels.get(k) != v for k, v in desired["metadata"]["labels"].items()
    )


def node_body(
    name: str, addresses: Sequence[str], labels: Mapping[str, str], pod_cidr: str, now: str
) -> Body:
    """A Node as the kubelet registers it (Ready; status is kept on create for Nodes)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                HOSTNAME_LABEL: name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **labels,
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [
                *({"type": "InternalIP", "address": a} for a in addresses),
                {"type": "Hostname", "address": name},
            ],
            "conditions": [node_condition(True, now)],
            "nodeInfo": node_info(name),
        },
    }


def node_info(name: str) -> Body:
    """Every field the Kubernetes clients require of nodeInfo (kubernetes 37 validates them)."""
    ident = hashlib.sha256(name.encode()).hexdigest()[:32]
    return {
        "architecture": "amd64",
        "bootID": ident,
        "containerRuntimeVersion": "lbctl-lab://0",
        "kernelVersion": "lab",
        "kubeProxyVersion": "",
        "kubeletVersion": "v1.37.0-lbctl-lab",
        "machineID": ident,
        "operatingSystem": "linux",
        "osImage": "lbctl lab",
        "systemUUID": ident,
    }


def node_condition(ready: bool, now: str) -> Body:
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "lab kubelet" if ready else "set not ready by the lab",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def node_taints(current: Sequence[Mapping[str, Any]], ready: bool) -> list[Body]:
    """The node's taints with the not-ready pair added or removed, others kept in order."""
    kept = [dict(t) for t in current if t.get("key") != NOT_READY_TAINT]
    if ready:
        return kept
    return [*kept, *({"key": NOT_READY_TAINT, "effect": e} for e in ("NoSchedule", "NoExecute"))]


def pod_status(
    pod: Mapping[str, Any], *, host_ip: str, pod_ip: str, running: bool, ready: bool, now: str
) -> Body:
    """status of a pod whose backend is running (or not) and ready (or not)."""
    flag = "True" if ready else "False"
    containers = (pod.get("spec") or {}).get("containers") or [{"name": "backend"}]
    state: Body = (
        {"running": {"startedAt": now}}
        if running
        else {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}}
    )
    return {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag},
            {"type": "Ready", "status": flag},
        ],
        "containerStatuses": [
            {
                "name": str(c.get("name", "backend")),
                "ready": ready,
                "started": running,
                "restartCount": 0,
                "image": str(c.get("image", "")),
                "imageID": "",
                "state": state,
            }
            for c in containers
        ],
    }
