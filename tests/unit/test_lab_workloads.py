"""What the lab's controller-manager and kube-proxy compute, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.lab import workloads as wl
from lbctl.lab.kubesync import frontends_for
from lbctl.lab.proxy import Frontend, Upstream, local_route


def endpoint(pod: str, node: str, ip: str, *, ready: bool = True, app: str = "web") -> wl.Endpoint:
    return wl.Endpoint("default", pod, f"uid-{pod}", node, ip, {"app": app},
                       (("http", 8080),), ready)  # fmt: skip


def service(**spec: Any) -> dict[str, Any]:
    ingress = spec.pop("ingress", [])
    return {
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}], **spec},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}},
    }


ENDPOINTS = [
    endpoint("web-a", "node-1", "198.51.100.17"),
    endpoint("web-b", "node-2", "198.51.100.33"),
    endpoint("web-c", "node-2", "198.51.100.34", ready=False),
    endpoint("db-a", "node-1", "198.51.100.18", app="db"),
]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"app": "web"}, {"app": "web", "x": "y"}, True),
        ({"app": "web"}, {"app": "db"}, False),
        ({}, {"app": "web"}, False),
        (None, {"app": "web"}, False),
    ],
    ids=["subset", "mismatch", "empty-selects-nothing", "missing-selects-nothing"],
)
def test_service_selectors(
    selector: dict[str, str] | None, labels: dict[str, str], expected: bool
) -> None:
    assert wl.matches(selector, labels) is expected


@given(
    st.integers(0, 20),
    st.lists(st.sampled_from(["node-1", "node-2", "node-3"]), unique=True, min_size=1),
    st.dictionaries(st.sampled_from(["node-1", "node-2", "node-3"]), st.integers(0, 5)),
)
def test_scheduling_only_uses_ready_nodes_and_keeps_the_spread_even(
    count: int, ready: list[str], load: dict[str, int]
) -> None:
    chosen = wl.schedule(count, ready, load)
    assert len(chosen) == count and set(chosen) <= set(ready)
    after = {n: load.get(n, 0) + chosen.count(n) for n in ready}
    if chosen:  # every pick went to a least-loaded node, so the busiest new target is bounded
        assert max(after[n] for n in set(chosen)) <= min(after.values()) + 1


def test_scheduling_with_no_ready_node_places_nothing() -> None:
    assert wl.schedule(3, [], {}) == []


def test_scale_down_removes_not_ready_pods_first_then_the_newest() -> None:
    def pod(name: str, ts: str, ready: bool) -> dict[str, Any]:
        cond = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {"metadata": {"name": name, "creationTimestamp": ts}, "status": {"conditions": cond}}

    pods = [pod("old", "2026-01-01T00:00:00Z", True), pod("new", "2026-01-02T00:00:00Z", True),
            pod("sick", "2026-01-01T00:00:00Z", False)]  # fmt: skip
    assert [p["metadata"]["name"] for p in wl.excess(pods, 1)] == ["sick", "new"]
    assert wl.excess(pods, 3) == []


def test_pods_for_a_deployment_carry_owner_labels_node_and_template() -> None:
    dep = {
        "metadata": {"name": "web", "namespace": "shop", "uid": "d-uid"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }  # fmt: skip
    pod = wl.pod_for(dep, "node-2")
    assert pod["metadata"]["name"].startswith("web-")
    assert pod["metadata"]["labels"]["app"] == "web"
    assert pod["spec"]["nodeName"] == "node-2"
    assert wl.owned_by(pod, dep) and wl.owner_deployment(pod) == "web"
    assert wl.container_ports(pod["spec"]) == [("", wl.DEFAULT_CONTAINER_PORT)]


def test_endpoint_slice_lists_selected_pods_with_conditions_and_resolved_ports() -> None:
    svc = service()
    svc["spec"]["ports"] = [{"name": "web", "port": 80, "targetPort": "http"}]
    body = wl.endpoint_slice(svc, ENDPOINTS)
    assert body["metadata"]["labels"][wl.SERVICE_NAME_LABEL] == "web"
    assert body["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    got = [
        (e["targetRef"]["name"], e["nodeName"], e["conditions"]["ready"]) for e in body["endpoints"]
    ]
    assert got == [("web-a", "node-1", True), ("web-b", "node-2", True), ("web-c", "node-2", False)]


def test_slice_comparison_ignores_server_defaults_but_sees_readiness() -> None:
    desired = wl.endpoint_slice(service(), ENDPOINTS)
    served = {
        **desired,
        "endpoints": [{**e, "zone": None, "hints": None} for e in desired["endpoints"]],
    }
    served["metadata"] = {**desired["metadata"], "resourceVersion": "7"}
    assert not wl.slice_differs(served, desired)
    flipped = wl.endpoint_slice(
        service(), [endpoint("web-a", "node-1", "198.51.100.17", ready=False)]
    )
    assert wl.slice_differs(served, flipped)


@pytest.mark.parametrize(
    ("ready", "expected"),
    [
        (False, [{"key": "x", "effect": "NoSchedule"},
                 {"key": wl.NOT_READY_TAINT, "effect": "NoSchedule"},
                 {"key": wl.NOT_READY_TAINT, "effect": "NoExecute"}]),
        (True, [{"key": "x", "effect": "NoSchedule"}]),
    ],
    ids=["not-ready-adds", "ready-removes"],
)  # fmt: skip
def test_node_taints_follow_readiness_and_keep_others(ready: bool, expected: list[Any]) -> None:
    current = [
        {"key": "x", "effect": "NoSchedule"},
        {"key": wl.NOT_READY_TAINT, "effect": "NoExecute"},
    ]
    assert wl.node_taints(current, ready) == expected


def test_cluster_policy_forwards_to_every_ready_backend_of_the_service() -> None:
    got = frontends_for(
        "node-1", [service(type="LoadBalancer", ingress=["192.0.2.200"])], ENDPOINTS
    )
    ups = [Upstream("198.51.100.17", 8080, "node-1"), Upstream("198.51.100.33", 8080, "node-2")]
    assert got == {Frontend("192.0.2.200", 80): ups}


def test_local_policy_forwards_only_to_this_nodes_ready_backends() -> None:
    svc = service(type="LoadBalancer", externalTrafficPolicy="Local", ingress=["192.0.2.200"])
    assert frontends_for("node-2", [svc], ENDPOINTS) == {
        Frontend("192.0.2.200", 80): [Upstream("198.51.100.33", 8080, "node-2")]
    }
    assert frontends_for("node-3", [svc], ENDPOINTS) == {Frontend("192.0.2.200", 80): []}


def test_services_without_ingress_or_not_load_balancers_get_no_frontend() -> None:
    assert frontends_for("node-1", [service(type="LoadBalancer")], ENDPOINTS) == {}
    assert (
        frontends_for("node-1", [service(type="ClusterIP", ingress=["192.0.2.9"])], ENDPOINTS) == {}
    )


@pytest.mark.parametrize(("vip", "prefix"), [("192.0.2.200", "/32"), ("2001:db8::200", "/128")])
def test_vip_routes_are_local_host_routes_on_lo(vip: str, prefix: str) -> None:
    assert local_route(vip) == [
        "route",
        "replace",
        "local",
        vip + prefix,
        "dev",
        "lo",
        "table",
        "local",
    ]
