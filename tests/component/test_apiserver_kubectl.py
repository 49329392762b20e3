"""The real kubectl 1.37 against the bed: discovery, tables, create/expose/patch/wait/watch."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from lbctl.lab.apiserver import ApiServer

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def columns(out: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]


def test_discovery_names_core_group_version_v1(raw: Any) -> None:
    assert raw("GET", "/api").body["versions"] == ["v1"]
    core = raw("GET", "/api/v1").body
    assert core["groupVersion"] == "v1"
    assert {"services", "services/status", "namespaces", "events"} <= {
        r["name"] for r in core["resources"]
    }
    groups = {g["name"] for g in raw("GET", "/apis").body["groups"]}
    assert {"apps", "discovery.k8s.io", "coordination.k8s.io", "events.k8s.io"} <= groups
    assert raw("GET", "/apis/discovery.k8s.io/v1").body["groupVersion"] == "discovery.k8s.io/v1"
    assert raw("GET", "/version").body["major"] == "1"


def test_kubectl_finds_resource_types(kubectl: Kubectl) -> None:
    out = kubectl("api-resources", "-o", "name").stdout.split()
    assert {
        "services",
        "endpointslices.discovery.k8s.io",
        "leases.coordination.k8s.io",
        "deployments.apps",
        "events.events.k8s.io",
    } <= set(out)


def test_create_expose_get_patch_wait_describe_label_delete(
    kubectl: Kubectl, core: client.CoreV1Api
) -> None:
    assert "created" in kubectl("create", "deployment", "web", "--image=x").stdout
    kubectl("expose", "deployment", "web", "--port=80", "--type=LoadBalancer")
    rows = columns(kubectl("get", "svc").stdout)
    assert rows[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    name, stype, cluster_ip, external, ports, _age = rows[1]
    assert (name, stype, external) == ("web", "LoadBalancer", "<pending>")
    assert cluster_ip.startswith("198.51.100.")
    assert re.fullmatch(r"80:3\d{4}/TCP", ports)
    assert core.read_namespaced_service("web", "default").spec.selector == {"app": "web"}

    patch = '{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}}'
    kubectl("patch", "svc", "web", "--subresource=status", "--type=merge", "-p", patch)
    waited = kubectl(
        "wait",
        "--for=jsonpath={.status.loadBalancer.ingress[0].ip}=192.0.2.10",
        "svc/web",
        "--timeout=10s",
    )
    assert "condition met" in waited.stdout
    assert columns(kubectl("get", "svc", "web").stdout)[1][3] == "192.0.2.10"

    uid = core.read_namespaced_service("web", "default").metadata.uid
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "web."},
            "involvedObject": {
                "kind": "Service",
                "name": "web",
                "namespace": "default",
                "uid": uid,
                "apiVersion": "v1",
            },
            "reason": "IPAllocated",
            "message": "Assigned IP 192.0.2.10",
            "type": "Normal",
            "source": {"component": "lbctl-controller"},
            "count": 1,
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:00Z",
        },
    )
    described = kubectl("describe", "svc", "web").stdout
    assert "LoadBalancer Ingress:     192.0.2.10" in described
    assert re.search(
        r"Normal\s+IPAllocated\s+.*lbctl-controller\s+Assigned IP 192.0.2.10", described
    ), described

    kubectl("label", "svc", "web", "team=net")
    assert core.read_namespaced_service("web", "default").metadata.labels["team"] == "net"
    kubectl("delete", "svc", "web")
    assert core.list_namespaced_service("default").items == []


def test_get_watch_prints_a_new_service(
    kubeconfig: Path,
    tmp_path: Path,
    core: client.CoreV1Api,
    *,
    svc: Any,
    api: ApiServer,
    wait_for: Any,
) -> None:
    cmd = [
        str(Path(".venv/bin/kubectl").resolve()),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={tmp_path}/kcache",
        "get",
        "svc",
        "-w",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # kubectl sends no bearer token over plain HTTP: its identity is its User-Agent.
        wait_for(
            lambda: any(
                r.verb == "watch" and r.identity.startswith("kubectl/") for r in api.requests()
            ),
            timeout=10,
            what="kubectl's watch",
        )
        core.create_namespaced_service("default", svc("live", type="LoadBalancer"))
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 10
        while "live" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert re.match(r"live\s+LoadBalancer\s+198\.51\.100\.\d+\s+<pending>\s+80:3", line)
    finally:
        proc.terminate()
        proc.communicate(timeout=5)


def test_get_other_resources_prints_name_and_age(kubectl: Kubectl) -> None:
    rows = columns(kubectl("get", "namespaces").stdout)
    assert rows[0] == ["NAME", "AGE"]
    assert [r[0] for r in rows[1:]] == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_kubectl_create_namespace_configmap_and_secret(
    kubectl: Kubectl, core: client.CoreV1Api
) -> None:
    kubectl("create", "namespace", "team-a")
    kubectl("-n", "team-a", "create", "configmap", "cfg", "--from-literal=k=v")
    kubectl("-n", "team-a", "create", "secret", "generic", "s", "--from-literal=k=v")
    assert core.read_namespaced_config_map("cfg", "team-a").data == {"k": "v"}
    assert core.read_namespaced_secret("s", "team-a").data == {"k": "dg=="}


def test_missing_object_message_matches_a_real_cluster(kubectl: Kubectl) -> None:
    done = kubectl("get", "svc", "nope", check=False)
    assert done.returncode == 1
    assert 'Error from server (NotFound): services "nope" not found' in done.stderr
