"""Conformance of Service defaulting: cluster IPs, families, node ports, policies."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

V4 = ipaddress.ip_network("198.51.100.0/24")
V6 = ipaddress.ip_network("2001:db8:5::/112")


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
