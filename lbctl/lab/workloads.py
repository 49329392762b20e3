"""What a kubelet writes, as pure functions over API bodies: the Node it registers, its
conditions, a running Pod's status; used by the kubelet stand-in."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

Body = dict[str, Any]

HOSTNAME_LABEL = "kubernetes.io/hostname"
DEFAULT_CONTAINER_PORT = 8080
KUBELET_VERSION = "v1.37.2"  # the control plane's release (tools/kube)
# Each node's share of the pod range (plan.pod_network: a /29 holds 6 pods), its CPU and memory.
CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "6", "ephemeral-storage": "20Gi"}


def key_of(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta["name"])


def labels_of(body: Mapping[str, Any]) -> dict[str, str]:
    return dict((body.get("metadata") or {}).get("labels") or {})


def container_ports(pod_spec: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(name, containerPort) of every TCP port the containers declare; the default if none."""
    found = [
        (str(p.get("name", "")), int(p["containerPort"]))
        for c in pod_spec.get("containers") or []
        for p in c.get("ports") or []
        if str(p.get("protocol", "TCP")) == "TCP" and "containerPort" in p
    ]
    return found or [("", DEFAULT_CONTAINER_PORT)]


def condition(body: Mapping[str, Any], kind: str) -> str | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return condition(pod, "Ready") == "True"


def node_ready(node: Mapping[str, Any]) -> bool:
    return condition(node, "Ready") == "True"


def node_body(name: str, addresses: Sequence[str], labels: Mapping[str, str], now: str) -> Body:
    """A Node as a kubelet registers it: labels, addresses, capacity, Ready (the API server
    keeps status on create for Nodes)."""
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
        "status": {
            "addresses": [
                *({"type": "InternalIP", "address": a} for a in addresses),
                {"type": "Hostname", "address": name},
            ],
            "capacity": dict(CAPACITY),
            "allocatable": dict(CAPACITY),
            "conditions": node_conditions(now),
            "nodeInfo": node_info(name),
        },
    }


def node_info(name: str) -> Body:
    """Every field the Kubernetes clients require of nodeInfo."""
    ident = hashlib.sha256(name.encode()).hexdigest()[:32]
    return {
        "architecture": "amd64",
        "bootID": ident,
        "containerRuntimeVersion": "lbctl-lab://0",
        "kernelVersion": "lab",
        "kubeProxyVersion": "",
        "kubeletVersion": KUBELET_VERSION,
        "machineID": ident,
        "operatingSystem": "linux",
        "osImage": "lbctl lab",
        "systemUUID": ident,
    }


def node_conditions(now: str) -> list[Body]:
    """A healthy kubelet's conditions, heartbeat `now`."""

    def cond(kind: str, status: str, reason: str) -> Body:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": f"lbctl lab kubelet: {reason}",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        cond("Ready", "True", "KubeletReady"),
    ]


def pod_status(
    pod: Mapping[str, Any], *, host_ip: str, pod_ip: str, running: bool, ready: bool, now: str
) -> Body:
    """status of a pod whose process is running (or not) and ready (or not)."""
    flag = "True" if ready else "False"
    containers = (pod.get("spec") or {}).get("containers") or [{"name": "backend"}]
    state: Body = (
        {"running": {"startedAt": now}}
        if running
        else {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}}
    )

    def cond(kind: str, status: str) -> Body:
        return {"type": kind, "status": status, "lastTransitionTime": now}

    return {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "conditions": [
            cond("PodReadyToStartContainers", "True"),
            cond("Initialized", "True"),
            cond("ContainersReady", flag),
            cond("Ready", flag),
            cond("PodScheduled", "True"),
        ],
        "containerStatuses": [
            {
                "name": str(c.get("name", "backend")),
                "ready": ready,
                "started": running,
                "restartCount": 0,
                "image": str(c.get("image", "")),
                "imageID": "",
                "containerID": f"lbctl-lab://{key_of(pod)[1]}-{c.get('name', 'backend')}",
                "state": state,
            }
            for c in containers
        ],
    }


def uid_of(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("uid", ""))


def pod_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def node_identity(name: str) -> tuple[str, list[str]]:
    """(user, groups) a node's kubelet authenticates as."""
    return f"system:node:{name}", ["system:nodes"]
