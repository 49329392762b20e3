"""What the kubelet stand-in writes, as pure functions: the Node, its conditions, pod status."""

from __future__ import annotations

from typing import Any

import pytest

from lbctl.lab import workloads as wl

NOW = "2026-12-04T07:00:00Z"


def test_a_registered_node_is_ready_with_addresses_capacity_and_its_hostname_label() -> None:
    body = wl.node_body("node-1", ["192.0.2.11", "2001:db8::11"], {"zone": "a"}, NOW)
    assert body["metadata"]["labels"] == {
        wl.HOSTNAME_LABEL: "node-1", "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "zone": "a",
    }  # fmt: skip
    internal = [a["address"] for a in body["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == ["192.0.2.11", "2001:db8::11"]
    assert body["status"]["allocatable"]["pods"] == wl.CAPACITY["pods"]
    assert wl.node_ready(body)
    assert body["status"]["nodeInfo"]["kubeletVersion"] == wl.KUBELET_VERSION


def test_node_conditions_report_no_pressure_and_carry_the_heartbeat() -> None:
    conds = {c["type"]: c for c in wl.node_conditions(NOW)}
    assert conds["Ready"]["status"] == "True"
    assert all(conds[k]["status"] == "False" for k in ("MemoryPressure", "DiskPressure"))
    assert {c["lastHeartbeatTime"] for c in conds.values()} == {NOW}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, [("", wl.DEFAULT_CONTAINER_PORT)], id="no-ports-means-the-default"),
        pytest.param(
            {"containers": [{"ports": [{"name": "http", "containerPort": 80},
                                       {"containerPort": 53, "protocol": "UDP"}]}]},
            [("http", 80)], id="tcp-only",
        ),
    ],
)  # fmt: skip
def test_container_ports(spec: dict[str, Any], expected: list[tuple[str, int]]) -> None:
    assert wl.container_ports(spec) == expected


@pytest.mark.parametrize(("running", "ready"), [(True, True), (False, False)])
def test_pod_status_follows_the_process(running: bool, ready: bool) -> None:
    pod = {"metadata": {"name": "web-1", "namespace": "default"},
           "spec": {"containers": [{"name": "web", "image": "lab"}]}}  # fmt: skip
    status = wl.pod_status(
        pod, host_ip="192.0.2.11", pod_ip="198.51.100.9", running=running, ready=ready, now=NOW
    )
    assert status["podIP"] == "198.51.100.9" and status["phase"] == "Running"
    assert wl.pod_ready({"status": status}) is ready
    (container,) = status["containerStatuses"]
    assert container["started"] is running and ("running" in container["state"]) is running
