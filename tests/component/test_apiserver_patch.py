"""Conformance of writes: merge, JSON and strategic merge patches, the status subresource."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

SVC = "/api/v1/namespaces/default/services"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"
T0 = "2026-01-01T00:00:00Z"


def cond(ctype: str, status: str = "True", reason: str = "Ok", **extra: Any) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": T0,
        **extra,
    }


@pytest.fixture
def web(raw: Any, svc: Any) -> dict[str, Any]:
    body = svc("web", type="LoadBalancer")
    body["spec"]["ports"] = [
        {"name": "http", "port": 80},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    made = raw("POST", SVC, body)
    assert made.status == 201
    return made.body


def test_merge_patch_sets_and_removes_keys(raw: Any, web: Any) -> None:
    patch = {"metadata": {"labels": {"a": "1", "b": "2"}}}
    raw("PATCH", f"{SVC}/web", patch, ctype=MERGE)
    done = raw("PATCH", f"{SVC}/web", {"metadata": {"labels": {"a": None}}}, ctype=MERGE)
    assert done.body["metadata"]["labels"] == {"b": "2"}


def test_merge_patch_replaces_lists_whole(raw: Any, web: Any) -> None:
    done = raw("PATCH", f"{SVC}/web", {"spec": {"ports": [{"port": 8080}]}}, ctype=MERGE)
    assert [p["port"] for p in done.body["spec"]["ports"]] == [8080]


def test_json_patch_applies_operations(raw: Any, web: Any) -> None:
    ops = [
        {"op": "add", "path": "/metadata/labels", "value": {"k/x": "v"}},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 81},
        {"op": "remove", "path": "/spec/ports/1"},
    ]
    done = raw("PATCH", f"{SVC}/web", ops, ctype=JSONP)
    assert done.status == 200
    assert done.body["metadata"]["labels"] == {"k/x": "v"}
    assert [p["port"] for p in done.body["spec"]["ports"]] == [81]


def test_json_patch_failed_test_op_is_422_and_changes_nothing(raw: Any, web: Any) -> None:
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    reply = raw("PATCH", f"{SVC}/web", ops, ctype=JSONP)
    assert reply.status == 422
    assert reply.body["kind"] == "Status"
    assert "labels" not in raw("GET", f"{SVC}/web").body["metadata"]


def test_json_patch_test_op_on_current_rv_passes(raw: Any, web: Any) -> None:
    rv = web["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    assert raw("PATCH", f"{SVC}/web", ops, ctype=JSONP).status == 200


def test_patch_with_stale_rv_is_409(raw: Any, web: Any) -> None:
    patch = {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}
    assert raw("PATCH", f"{SVC}/web", patch, ctype=MERGE).status == 409


def test_unknown_patch_type_is_415(raw: Any, web: Any) -> None:
    assert raw("PATCH", f"{SVC}/web", {}, ctype="text/plain").status == 415


def test_strategic_merge_merges_ports_by_port_and_protocol(raw: Any, web: Any) -> None:
    patch = {
        "spec": {
            "ports": [
                {"port": 53, "protocol": "UDP", "name": "dns-udp"},
                {"port": 53, "protocol": "TCP", "name": "dns-tcp"},
            ]
        }
    }
    done = raw("PATCH", f"{SVC}/web", patch, ctype=SMP).body
    ports = {(p["port"], p["protocol"]): p["name"] for p in done["spec"]["ports"]}
    assert ports == {(80, "TCP"): "http", (53, "UDP"): "dns-udp", (53, "TCP"): "dns-tcp"}


def test_strategic_merge_merges_conditions_by_type(raw: Any, web: Any) -> None:
    first = {"status": {"conditions": [cond("A"), cond("B")]}}
    raw("PATCH", f"{SVC}/web/status", first, ctype=SMP)
    second = {"status": {"conditions": [cond("B", "False", "Broken")]}}
    done = raw("PATCH", f"{SVC}/web/status", second, ctype=SMP).body
    assert [(c["type"], c["status"]) for c in done["status"]["conditions"]] == [
        ("A", "True"),
        ("B", "False"),
    ]


def test_strategic_merge_patch_delete_directive_removes_a_condition(raw: Any, web: Any) -> None:
    raw("PATCH", f"{SVC}/web/status", {"status": {"conditions": [cond("A"), cond("B")]}}, ctype=SMP)
    patch = {"status": {"conditions": [{"type": "A", "$patch": "delete"}]}}
    done = raw("PATCH", f"{SVC}/web/status", patch, ctype=SMP).body
    assert [c["type"] for c in done["status"]["conditions"]] == ["B"]


def test_strategic_merge_replaces_ingress_whole(raw: Any, web: Any) -> None:
    two = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}]}}}
    raw("PATCH", f"{SVC}/web/status", two, ctype=SMP)
    one = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.3"}]}}}
    done = raw("PATCH", f"{SVC}/web/status", one, ctype=SMP).body
    assert done["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.3"}]


def test_strategic_merge_unions_finalizers(raw: Any, web: Any) -> None:
    raw("PATCH", f"{SVC}/web", {"metadata": {"finalizers": ["a"]}}, ctype=SMP)
    done = raw("PATCH", f"{SVC}/web", {"metadata": {"finalizers": ["b"]}}, ctype=SMP).body
    assert done["metadata"]["finalizers"] == ["a", "b"]


def test_status_write_changes_only_status(raw: Any, web: Any) -> None:
    patch = {
        "metadata": {"labels": {"x": "y"}},
        "spec": {"selector": {"app": "other"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}},
    }
    done = raw("PATCH", f"{SVC}/web/status", patch, ctype=MERGE).body
    assert done["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.9"}]
    assert done["spec"]["selector"] == {"app": "web"}
    assert "labels" not in done["metadata"]


def test_main_resource_write_ignores_status(raw: Any, web: Any) -> None:
    patch = {
        "spec": {"selector": {"app": "x"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}},
    }
    done = raw("PATCH", f"{SVC}/web", patch, ctype=MERGE).body
    assert done["spec"]["selector"] == {"app": "x"}
    assert done["status"] == {"loadBalancer": {}}


def test_put_status_replaces_status_only(core: client.CoreV1Api, web: Any) -> None:
    cur = core.read_namespaced_service("web", "default")
    cur.status = {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}
    cur.spec.selector = {"app": "changed"}
    done = core.replace_namespaced_service_status("web", "default", cur)
    assert done.status.load_balancer.ingress[0].ip == "192.0.2.7"
    assert done.spec.selector == {"app": "web"}


def test_status_given_on_create_is_dropped(raw: Any, svc: Any) -> None:
    body = svc("x")
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    assert raw("POST", SVC, body).body["status"] == {"loadBalancer": {}}


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param({k: v for k, v in cond("A").items() if k != "type"}, id="no-type"),
        pytest.param({k: v for k, v in cond("A").items() if k != "status"}, id="no-status"),
        pytest.param(cond("A", status="Yes"), id="status-not-true-false-unknown"),
        pytest.param({k: v for k, v in cond("A").items() if k != "reason"}, id="no-reason"),
        pytest.param(cond("A", reason="not camel case"), id="reason-with-spaces"),
        pytest.param(cond("A", reason="9Lives"), id="reason-starting-with-digit"),
        pytest.param(
            {k: v for k, v in cond("A").items() if k != "lastTransitionTime"}, id="no-ltt"
        ),
        pytest.param(cond("A", lastTransitionTime="yesterday"), id="ltt-not-rfc3339"),
    ],
)
def test_malformed_service_condition_is_422(raw: Any, web: Any, condition: Any) -> None:
    reply = raw("PATCH", f"{SVC}/web/status", {"status": {"conditions": [condition]}}, ctype=MERGE)
    assert reply.status == 422
    assert reply.body["reason"] == "Invalid"
    assert reply.body["details"]["causes"]


def test_well_formed_condition_is_accepted(raw: Any, web: Any) -> None:
    good = cond("lbctl.io/Allocated", reason="IPAllocated", observedGeneration=1)
    reply = raw("PATCH", f"{SVC}/web/status", {"status": {"conditions": [good]}}, ctype=MERGE)
    assert reply.status == 200


def test_invalid_ingress_ip_is_422(core: client.CoreV1Api, web: Any) -> None:
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_service_status(
            "web", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "300.1.1.1"}]}}}
        )
    assert err.value.status == 422
