"""Conformance of Service defaulting: cluster IPs, families, node ports, policies, ranges."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lbctl.lab.api import defaulting
from lbctl.lab.api import patch as patching
from lbctl.lab.api.errors import ApiError
from lbctl.lab.api.resources import Registry
from lbctl.lab.api.store import Store
from lbctl.lab.apiserver import ApiServer

V4 = ipaddress.ip_network("198.51.100.0/24")
V6 = ipaddress.ip_network("2001:db8:5::/108")  # 2^20 addresses: room for 10k-Service runs


def test_cluster_ip_service_defaults(core: client.CoreV1Api, svc: Any) -> None:
    spec = core.create_namespaced_service("default", svc("a")).spec
    assert ipaddress.ip_address(spec.cluster_ip) in V4
    assert spec.cluster_ips == [spec.cluster_ip]
    assert spec.type == "ClusterIP"
    assert spec.ip_families == ["IPv4"]
    assert spec.ip_family_policy == "SingleStack"
    assert spec.session_affinity == "None"
    assert spec.internal_traffic_policy == "Cluster"
    assert spec.external_traffic_policy is None
    port = spec.ports[0]
    assert (port.protocol, port.target_port, port.node_port) == ("TCP", 80, None)


def test_load_balancer_gets_node_ports_and_cluster_policy(core: client.CoreV1Api, svc: Any) -> None:
    body = svc("lb", type="LoadBalancer")
    body["spec"]["ports"] = [{"name": "a", "port": 80}, {"name": "b", "port": 443}]
    spec = core.create_namespaced_service("default", body).spec
    assert spec.external_traffic_policy == "Cluster"
    assert spec.allocate_load_balancer_node_ports is True
    assert spec.health_check_node_port is None
    ports = [p.node_port for p in spec.ports]
    assert all(30000 <= p <= 32767 for p in ports)
    assert len(set(ports)) == 2


def test_node_ports_are_unique_across_services(core: client.CoreV1Api, svc: Any) -> None:
    seen = set()
    for i in range(5):
        spec = core.create_namespaced_service("default", svc(f"s{i}", type="NodePort")).spec
        seen.add(spec.ports[0].node_port)
        seen.add(spec.cluster_ip)
    assert len(seen) == 10


def test_local_policy_load_balancer_gets_health_check_node_port(
    core: client.CoreV1Api, svc: Any
) -> None:
    body = svc("lb", type="LoadBalancer", externalTrafficPolicy="Local")
    spec = core.create_namespaced_service("default", body).spec
    assert 30000 <= spec.health_check_node_port <= 32767
    assert spec.health_check_node_port != spec.ports[0].node_port


def test_dual_stack_gets_one_ip_per_family(core: client.CoreV1Api, svc: Any) -> None:
    spec = core.create_namespaced_service(
        "default", svc("ds", ipFamilyPolicy="RequireDualStack")
    ).spec
    assert spec.ip_families == ["IPv4", "IPv6"]
    assert ipaddress.ip_address(spec.cluster_ips[0]) in V4
    assert ipaddress.ip_address(spec.cluster_ips[1]) in V6


def test_ipv6_single_stack(core: client.CoreV1Api, svc: Any) -> None:
    spec = core.create_namespaced_service("default", svc("v6", ipFamilies=["IPv6"])).spec
    assert ipaddress.ip_address(spec.cluster_ip) in V6


def test_headless_service_keeps_none(core: client.CoreV1Api, svc: Any) -> None:
    spec = core.create_namespaced_service("default", svc("h", clusterIP="None")).spec
    assert spec.cluster_ip == "None"
    assert spec.cluster_ips == ["None"]


def test_named_target_port_is_kept(core: client.CoreV1Api, svc: Any) -> None:
    body = svc("n")
    body["spec"]["ports"] = [{"port": 80, "targetPort": "http"}]
    assert core.create_namespaced_service("default", body).spec.ports[0].target_port == "http"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"clusterIP": "10.0.0.1"}, "spec.clusterIPs", id="cluster-ip-outside-cidr"),
        pytest.param(
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
            "spec.ports[0].nodePort",
            id="node-port-outside-range",
        ),
        pytest.param({"ports": [{"port": 70000}]}, "spec.ports[0].port", id="port-too-big"),
        pytest.param({"type": "Magic"}, "spec.type", id="unknown-type"),
    ],
)
def test_invalid_service_is_422(core: client.CoreV1Api, svc: Any, spec: Any, field: str) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("default", svc("bad", **spec))
    assert err.value.status == 422
    assert field in err.value.body


def test_taken_node_port_and_cluster_ip_are_422(core: client.CoreV1Api, svc: Any) -> None:
    first = core.create_namespaced_service("default", svc("a", type="NodePort")).spec
    clash = svc("b", type="NodePort")
    clash["spec"]["ports"] = [{"port": 80, "nodePort": first.ports[0].node_port}]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("default", clash)
    assert err.value.status == 422
    assert "already allocated" in err.value.body
    with pytest.raises(ApiException) as err2:
        core.create_namespaced_service("default", svc("c", clusterIP=first.cluster_ip))
    assert err2.value.status == 422


def test_update_without_allocated_fields_keeps_them(core: client.CoreV1Api, svc: Any) -> None:
    made = core.create_namespaced_service("default", svc("a", type="LoadBalancer"))
    body = svc("a", type="LoadBalancer")
    body["metadata"]["resourceVersion"] = made.metadata.resource_version
    kept = core.replace_namespaced_service("a", "default", body).spec
    assert kept.cluster_ip == made.spec.cluster_ip
    assert kept.ports[0].node_port == made.spec.ports[0].node_port


def test_changing_type_to_load_balancer_allocates_node_ports(
    core: client.CoreV1Api, svc: Any
) -> None:
    core.create_namespaced_service("default", svc("a"))
    spec = core.patch_namespaced_service("a", "default", {"spec": {"type": "LoadBalancer"}}).spec
    assert spec.ports[0].node_port is not None
    back = core.patch_namespaced_service("a", "default", {"spec": {"type": "ClusterIP"}}).spec
    assert back.ports[0].node_port is None
    assert back.external_traffic_policy is None


def test_released_addresses_can_be_reused(core: client.CoreV1Api, svc: Any) -> None:
    ip = core.create_namespaced_service("default", svc("a")).spec.cluster_ip
    core.delete_namespaced_service("a", "default")
    assert core.create_namespaced_service("default", svc("b", clusterIP=ip)).spec.cluster_ip == ip


# ---- service CIDRs, the allocation index and its cursors ---------------------------------


def test_status_write_skips_defaulting(
    core: client.CoreV1Api, svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    core.create_namespaced_service("default", svc("a", type="LoadBalancer"))
    calls: Counter[str] = Counter()
    real = defaulting.default_service

    def counted(*args: Any) -> Any:
        calls["default_service"] += 1
        return real(*args)

    monkeypatch.setattr(defaulting, "default_service", counted)
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}}
    core.patch_namespaced_service_status("a", "default", status)
    assert calls["default_service"] == 0
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"x": "1"}}})
    assert calls["default_service"] == 1


def test_service_cidrs_option_makes_a_single_stack_ipv6_cluster(http_to: Any, svc: Any) -> None:
    with ApiServer(service_cidrs=["2001:db8:7::/120"]) as api:
        raw = http_to(api.port)
        made = raw("POST", "/api/v1/namespaces/default/services", svc("a"))
        v4 = raw("POST", "/api/v1/namespaces/default/services", svc("b", ipFamilies=["IPv4"]))
        both = raw(
            "POST",
            "/api/v1/namespaces/default/services",
            svc("c", ipFamilyPolicy="RequireDualStack"),
        )
        prefer = raw(
            "POST",
            "/api/v1/namespaces/default/services",
            svc("d", ipFamilyPolicy="PreferDualStack"),
        )
    assert made.body["spec"]["ipFamilies"] == ["IPv6"]
    assert ipaddress.ip_address(made.body["spec"]["clusterIP"]) in ipaddress.ip_network(
        "2001:db8:7::/120"
    )
    assert (v4.status, both.status) == (422, 422)
    assert "not configured on this cluster" in v4.body["message"]
    assert prefer.body["spec"]["ipFamilies"] == ["IPv6"]


@pytest.mark.parametrize(
    "cidrs",
    [
        pytest.param(["10.96.0.0/24"], id="not-a-documentation-range"),
        pytest.param(["192.0.2.0/24", "203.0.113.0/24"], id="two-ranges-of-one-family"),
        pytest.param(["2001:db8::/96"], id="larger-than-2-to-the-20"),
        pytest.param(["192.0.2.0/31"], id="too-small"),
        pytest.param([], id="none"),
    ],
)
def test_bad_service_cidrs_fail_the_constructor(cidrs: list[str]) -> None:
    with pytest.raises(ValueError, match="service CIDR"):
        ApiServer(service_cidrs=cidrs)


def test_small_range_wraps_to_freed_addresses_and_full_is_422(http_to: Any, svc: Any) -> None:
    # A /29 holds 8 addresses: the network, the first host and the last are never handed out.
    with ApiServer(service_cidrs=["192.0.2.8/29"]) as api:
        raw = http_to(api.port)
        path = "/api/v1/namespaces/default/services"
        ips = [raw("POST", path, svc(f"s{i}")).body["spec"]["clusterIP"] for i in range(5)]
        full = raw("POST", path, svc("full"))
        raw("DELETE", f"{path}/s1")
        again = raw("POST", path, svc("again")).body["spec"]["clusterIP"]
    assert ips == [f"192.0.2.{n}" for n in range(10, 15)]
    assert full.status == 422
    assert "is full" in full.body["message"]
    assert again == ips[1]


def test_cursor_does_not_hand_a_freed_address_straight_back(http_to: Any, svc: Any) -> None:
    with ApiServer() as api:
        raw = http_to(api.port)
        path = "/api/v1/namespaces/default/services"
        first = raw("POST", path, svc("a")).body["spec"]["clusterIP"]
        raw("DELETE", f"{path}/a")
        second = raw("POST", path, svc("b")).body["spec"]["clusterIP"]
    assert ipaddress.ip_address(second) == ipaddress.ip_address(first) + 1


def test_rejected_writes_hold_nothing(http_to: Any, svc: Any) -> None:
    with ApiServer(service_cidrs=["192.0.2.8/29"]) as api:
        raw = http_to(api.port)
        path = "/api/v1/namespaces/default/services"
        for i in range(10):  # defaulting allocates, then validation refuses the port
            bad = svc(f"bad{i}", type="NodePort", ports=[{"port": 80, "protocol": "IP"}])
            assert raw("POST", path, bad).status == 422
        made = [raw("POST", path, svc(f"s{i}")).status for i in range(5)]
        held = api.call(lambda store: store.allocations.held())
    assert made == [201] * 5
    assert len(held[0]) == 5
    assert held[1] == set()


def test_node_port_range_full_is_422_and_freed_ports_are_reused() -> None:
    store = Store(Registry())
    res = store.registry.by_key("v1/services")

    def node_port(name: str) -> Any:
        spec = {"type": "NodePort", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}
        return store.create(res, "default", {"metadata": {"name": name}, "spec": spec})

    ports = [node_port(f"s{i}")["spec"]["ports"][0]["nodePort"] for i in range(2768)]
    assert sorted(ports) == list(range(30000, 32768))
    with pytest.raises(ApiError, match="node port range is full"):
        node_port("one-too-many")
    store.delete(res, "default", "s7", {})
    assert node_port("reuse")["spec"]["ports"][0]["nodePort"] == ports[7]


_NAMES = st.sampled_from(["a", "b", "c", "d"])
_OPS = st.one_of(
    st.tuples(st.just("create"), _NAMES, st.sampled_from(["ClusterIP", "NodePort"])),
    st.tuples(st.just("pin-port"), _NAMES, st.integers(30000, 30002)),
    st.tuples(st.just("pin-ip"), _NAMES, st.integers(2, 6)),
    st.tuples(st.just("to-cluster-ip"), _NAMES, st.none()),
    st.tuples(st.just("status"), _NAMES, st.none()),
    st.tuples(st.just("finalize"), _NAMES, st.none()),
    st.tuples(st.just("delete"), _NAMES, st.none()),
)


def _merge(store: Store, name: str, patch: dict[str, Any], sub: str = "") -> None:
    """What PATCH (merge patch) does: apply to the stored object, then commit."""
    res = store.registry.by_key("v1/services")
    current = store.get(res, "default", name)
    patched = patching.apply_patch("application/merge-patch+json", current, patch)
    store.patch(res, "default", name, patched, sub)


def _apply(store: Store, op: str, name: str, arg: Any) -> None:
    res = store.registry.by_key("v1/services")
    if op == "create":
        spec = {"type": arg, "ports": [{"port": 80}], "ipFamilyPolicy": "PreferDualStack"}
        store.create(res, "default", {"metadata": {"name": name}, "spec": spec})
    elif op == "pin-port":
        _merge(
            store, name, {"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": arg}]}}
        )
    elif op == "pin-ip":  # a changed cluster IP, as a replace with new values would ask
        _merge(store, name, {"spec": {"clusterIP": f"192.0.2.{8 + arg}", "clusterIPs": None}})
    elif op == "to-cluster-ip":
        _merge(store, name, {"spec": {"type": "ClusterIP"}})
    elif op == "status":
        ingress = [{"ip": "203.0.113.9"}]
        _merge(store, name, {"status": {"loadBalancer": {"ingress": ingress}}}, "status")
    elif op == "finalize":
        _merge(store, name, {"metadata": {"finalizers": ["x.io/f"]}})
    else:
        store.delete(res, "default", name, {})
        if ("default", name) in store.objects[res.key]:  # a finalizer holds it: let it go
            _merge(store, name, {"metadata": {"finalizers": None}})


@settings(max_examples=60, deadline=None)
@given(st.lists(_OPS, max_size=25))
def test_index_always_equals_what_stored_services_hold(ops: list[tuple[str, str, Any]]) -> None:
    store = Store(Registry(), service_cidrs=["192.0.2.8/29", "2001:db8:6::/125"])
    for op, name, arg in ops:
        try:
            _apply(store, op, name, arg)
        except ApiError as err:
            assert err.code in (404, 409, 422), err.message
        ips: Counter[Any] = Counter()
        ports: Counter[int] = Counter()
        for obj in store.objects["v1/services"].values():
            spec = obj["spec"]
            ips.update(ipaddress.ip_address(ip) for ip in spec.get("clusterIPs") or [])
            ports.update(p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort"))
        assert store.allocations.held() == (set(ips), set(ports))
        assert all(n == 1 for n in (ips + ports).values()), "a value held twice"
