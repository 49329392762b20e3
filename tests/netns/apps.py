"""Workloads and questions shared by the namespace tests: a Deployment of the bed's echo server,
a LoadBalancer Service, its ingress IPs and conditions, and one TCP exchange from the client."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from lbctl.lab import nsutil
from lbctl.lab.bed import Bed

NS = "default"


def deploy(api: client.ApiClient, name: str, replicas: int, node: str | None = None) -> None:
    """A Deployment of the bed's echo server (port 8080), pinned to `node` when given."""
    labels = {"app": name}
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "web", "image": "lab", "ports": [{"containerPort": 8080}]}],
    }
    if node is not None:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    client.AppsV1Api(api).create_namespaced_deployment(NS, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    })  # fmt: skip


def create_service(api: client.ApiClient, name: str, **spec: Any) -> None:
    """A LoadBalancer Service of port 80 in front of the pods labelled app=NAME."""
    body = {"metadata": {"name": name}, "spec": {
        "type": "LoadBalancer", "selector": {"app": name},
        "ports": [{"port": 80, "targetPort": 8080}], **spec}}  # fmt: skip
    client.CoreV1Api(api).create_namespaced_service(NS, body)


def ingress(api: client.ApiClient, name: str) -> list[str]:
    svc = client.CoreV1Api(api).read_namespaced_service(name, NS)
    lb = svc.status.load_balancer
    return [e.ip for e in (lb.ingress or [])] if lb else []


def condition(api: client.ApiClient, name: str, kind: str) -> dict[str, Any] | None:
    """The Service's status condition of type `kind`, as the API server returns it."""
    raw = client.CoreV1Api(api).read_namespaced_service(name, NS, _preload_content=False).data
    for cond in (json.loads(raw).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def ask(bed: Bed, vip: str, port: int = 80, timeout: float = 1.0) -> dict[str, str]:
    """One TCP exchange from the client namespace: the backend's `key=value` words, or {} when
    nothing answers (no route, kube-proxy dropped or refused it)."""
    data = b""
    try:
        with nsutil.connect_tcp_in_netns(
            bed.topology.client.netns, vip, port, timeout=timeout
        ) as sock:
            sock.sendall(b"hello\n")
            while chunk := sock.recv(4096):
                data += chunk
    except (nsutil.NetnsError, OSError):
        return {}
    return dict(word.split("=", 1) for word in data.decode().split())
