"""Service, Node and EndpointSlice bodies become model objects: every annotation and spec rule."""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.adapt import (
    AdaptFailure,
    EndpointSliceInfo,
    NodeInfo,
    adapt_endpointslice,
    adapt_node,
    adapt_service,
    allocated_pool,
    held_ips,
    is_load_balancer,
    key_of,
)
from lbctl.core.model import (
    Family,
    IPFamilyPolicy,
    ServicePort,
    ServiceRequest,
    TrafficPolicy,
)
from lbctl.core.reasons import AllocFailure

V4, V6 = Family.V4, Family.V6
IP = ipaddress.ip_address
PREFIXES = ("lbctl.io/", "metallb.io/", "metallb.universe.tf/")


def service(annotations: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": annotations or {},
            "creationTimestamp": "2026-01-02T03:04:05Z",
        },
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], **spec},
    }


def adapted(body: dict[str, Any], **kwargs: Any) -> ServiceRequest:
    result = adapt_service(body, **kwargs)
    assert isinstance(result, ServiceRequest), result
    return result


def failure(body: dict[str, Any]) -> AdaptFailure:
    result = adapt_service(body)
    assert isinstance(result, AdaptFailure), result
    assert result.reason is AllocFailure.INVALID_ANNOTATION
    assert result.key == "shop/web"
    return result


# --- annotations under every prefix --------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_address_pool_annotation_is_read_under_every_prefix(prefix: str) -> None:
    assert adapted(service({prefix + "address-pool": "blue"})).pool == "blue"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_allow_shared_ip_annotation_is_read_under_every_prefix(prefix: str) -> None:
    assert adapted(service({prefix + "allow-shared-ip": "key-1"})).sharing_key == "key-1"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_load_balancer_ips_annotation_is_read_under_every_prefix(prefix: str) -> None:
    request = adapted(service({prefix + "loadBalancerIPs": "192.0.2.10"}))
    assert request.requested_ips == (IP("192.0.2.10"),)


def test_same_value_under_two_prefixes_is_accepted() -> None:
    body = service({"metallb.io/address-pool": "blue", "metallb.universe.tf/address-pool": "blue"})
    assert adapted(body).pool == "blue"


def test_empty_annotation_means_not_set() -> None:
    body = service({"metallb.io/address-pool": "", "lbctl.io/loadBalancerIPs": " "})
    request = adapted(body)
    assert (request.pool, request.requested_ips) == (None, ())


def test_no_annotations_at_all() -> None:
    body = service()
    del body["metadata"]["annotations"]
    request = adapted(body)
    assert (request.pool, request.sharing_key, request.requested_ips) == (None, None, ())


def test_allocated_pool_prefers_lbctl_then_metallb_then_legacy() -> None:
    both = {
        "metallb.universe.tf/ip-allocated-from-pool": "old",
        "metallb.io/ip-allocated-from-pool": "new",
    }
    assert allocated_pool(service(both)) == "new"
    assert allocated_pool(service({**both, "lbctl.io/ip-allocated-from-pool": "ours"})) == "ours"
    assert allocated_pool(service({"metallb.universe.tf/ip-allocated-from-pool": "old"})) == "old"
    assert allocated_pool(service()) is None


# --- invalid annotations and spec: (id, body, words the message must contain) -------------------

INVALID = [
    pytest.param(
        service({"metallb.io/address-pool": "blue", "lbctl.io/address-pool": "red"}),
        ['"lbctl.io/address-pool" ("red")', '"metallb.io/address-pool" ("blue")', "disagree"],
        id="address-pool-differs-between-prefixes",
    ),
    pytest.param(
        service({"metallb.universe.tf/allow-shared-ip": "a", "metallb.io/allow-shared-ip": "b"}),
        ['"metallb.io/allow-shared-ip"', '"metallb.universe.tf/allow-shared-ip"', "disagree"],
        id="allow-shared-ip-differs-between-metallb-prefixes",
    ),
    pytest.param(
        service(
            {
                "metallb.io/loadBalancerIPs": "192.0.2.1",
                "metallb.universe.tf/loadBalancerIPs": "192.0.2.2",
            }
        ),
        ['"metallb.io/loadBalancerIPs"', '"metallb.universe.tf/loadBalancerIPs"', "disagree"],
        id="loadBalancerIPs-differs-between-prefixes",
    ),
    pytest.param(
        service({"metallb.io/loadBalancerIPs": "192.0.2.1"}, loadBalancerIP="192.0.2.1"),
        ["spec.loadBalancerIP", '"metallb.io/loadBalancerIPs"', "both set"],
        id="spec-loadBalancerIP-with-annotation",
    ),
    pytest.param(
        service(loadBalancerIP="192.0.2.300"),
        ['spec.loadBalancerIP: "192.0.2.300" is not an IP address'],
        id="spec-loadBalancerIP-not-an-ip",
    ),
    pytest.param(
        service(loadBalancerIP=17),
        ['spec.loadBalancerIP: "17" is not an IP address'],
        id="spec-loadBalancerIP-not-a-string",
    ),
    pytest.param(
        service({"lbctl.io/loadBalancerIPs": "192.0.2.1,web.example"}),
        ['annotation "lbctl.io/loadBalancerIPs": "web.example" is not an IP address'],
        id="loadBalancerIPs-item-not-an-ip",
    ),
    pytest.param(
        service({"lbctl.io/loadBalancerIPs": "192.0.2.1,"}),
        ['annotation "lbctl.io/loadBalancerIPs": "" is not an IP address'],
        id="loadBalancerIPs-empty-item",
    ),
    pytest.param(
        service({"lbctl.io/loadBalancerIPs": "192.0.2.1, 192.0.2.2"}),
        ['annotation "lbctl.io/loadBalancerIPs": more than one IPv4 address'],
        id="loadBalancerIPs-two-of-one-family",
    ),
    pytest.param(
        service({"metallb.io/loadBalancerIPs": "2001:db8::1"}, ipFamilies=["IPv4"]),
        ['annotation "metallb.io/loadBalancerIPs": "2001:db8::1" is IPv6, not IPv4'],
        id="requested-ip-family-not-in-ipFamilies",
    ),
    pytest.param(
        service(loadBalancerIP="192.0.2.7", ipFamilies=["IPv6"]),
        ['spec.loadBalancerIP: "192.0.2.7" is IPv4, not IPv6'],
        id="spec-loadBalancerIP-family-not-in-ipFamilies",
    ),
    pytest.param(
        service(ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="SingleStack"),
        ["SingleStack but two IP families"],
        id="single-stack-with-two-families",
    ),
    pytest.param(
        service(
            {"lbctl.io/loadBalancerIPs": "192.0.2.1,2001:db8::1"}, ipFamilyPolicy="SingleStack"
        ),
        ["SingleStack but two IP families"],
        id="single-stack-asking-for-two-families",
    ),
    pytest.param(
        service(ipFamilies=["IPv5"]),
        ['spec.ipFamilies[0]: "IPv5" is not IPv4 or IPv6'],
        id="unknown-ip-family",
    ),
    pytest.param(
        service(ipFamilies=["IPv6", "IPv6"], ipFamilyPolicy="RequireDualStack"),
        ["spec.ipFamilies[1]: IPv6 listed twice"],
        id="duplicate-ip-family",
    ),
    pytest.param(
        service(ipFamilies="IPv4"), ["spec.ipFamilies: not a list"], id="ipFamilies-not-a-list"
    ),
    pytest.param(
        service(ipFamilyPolicy="MaybeDualStack"),
        ['spec.ipFamilyPolicy: "MaybeDualStack" is not a known policy'],
        id="unknown-ip-family-policy",
    ),
    pytest.param(
        service(externalTrafficPolicy="Global"),
        ['spec.externalTrafficPolicy: "Global" is not Cluster or Local'],
        id="unknown-external-traffic-policy",
    ),
    pytest.param(
        service(ports=[{"port": 0}]),
        ['spec.ports[0].port: "0" is not a port number'],
        id="port-out-of-range",
    ),
    pytest.param(
        service(ports=[{"port": 80}, {"port": True}]),
        ['spec.ports[1].port: "True" is not a port number'],
        id="port-is-a-bool",
    ),
    pytest.param(
        service(ports=[{"port": 53, "protocol": "ICMP"}]),
        ['spec.ports[0].protocol: "ICMP" is not TCP, UDP or SCTP'],
        id="unknown-port-protocol",
    ),
    pytest.param(
        service({"lbctl.io/address-pool": "a", "metallb.io/address-pool": "b"}, ipFamilies=["X"]),
        ["disagree", '; spec.ipFamilies[0]: "X"'],
        id="every-problem-is-reported",
    ),
]


@pytest.mark.parametrize(("body", "words"), INVALID)
def test_invalid_annotation_or_spec_is_an_invalid_annotation_failure(
    body: dict[str, Any], words: list[str]
) -> None:
    message = failure(body).message
    for word in words:
        assert word in message


def test_control_characters_in_annotations_are_escaped_in_messages() -> None:
    body = service({"lbctl.io/address-pool": "a\nb", "metallb.io/address-pool": "c"})
    message = failure(body).message
    assert "\n" not in message
    assert '"a\\nb"' in message


# --- requested IPs and families ------------------------------------------------------------------

FAMILIES = [
    pytest.param(service(), (V4,), IPFamilyPolicy.SINGLE_STACK, (), id="default-ipv4-single-stack"),
    pytest.param(
        service(ipFamilies=["IPv6"]), (V6,), IPFamilyPolicy.SINGLE_STACK, (), id="ipv6-from-spec"
    ),
    pytest.param(
        service(ipFamilies=["IPv6", "IPv4"], ipFamilyPolicy="PreferDualStack"),
        (V6, V4),
        IPFamilyPolicy.PREFER_DUAL_STACK,
        (),
        id="dual-stack-primary-family-first",
    ),
    pytest.param(
        service(ipFamilies=["IPv4", "IPv6"]),
        (V4, V6),
        IPFamilyPolicy.REQUIRE_DUAL_STACK,
        (),
        id="two-families-without-policy-require-dual-stack",
    ),
    pytest.param(
        service(loadBalancerIP=" 2001:db8::5 "),
        (V6,),
        IPFamilyPolicy.SINGLE_STACK,
        ("2001:db8::5",),
        id="families-default-from-spec-loadBalancerIP",
    ),
    pytest.param(
        service({"metallb.io/loadBalancerIPs": " 2001:db8::1 , 192.0.2.1 "}),
        (V6, V4),
        IPFamilyPolicy.REQUIRE_DUAL_STACK,
        ("2001:db8::1", "192.0.2.1"),
        id="families-default-from-annotation-spaces-trimmed",
    ),
    pytest.param(
        service(
            {"lbctl.io/loadBalancerIPs": "192.0.2.1,2001:db8::1"},
            ipFamilies=["IPv4", "IPv6"],
            ipFamilyPolicy="RequireDualStack",
        ),
        (V4, V6),
        IPFamilyPolicy.REQUIRE_DUAL_STACK,
        ("192.0.2.1", "2001:db8::1"),
        id="dual-stack-request-matching-ipFamilies",
    ),
    pytest.param(
        service(loadBalancerIP="192.0.2.9", ipFamilies=["IPv4", "IPv6"]),
        (V4, V6),
        IPFamilyPolicy.REQUIRE_DUAL_STACK,
        ("192.0.2.9",),
        id="one-requested-ip-on-a-dual-stack-service",
    ),
    pytest.param(
        service(ipFamilyPolicy="RequireDualStack"),
        (V4, V6),
        IPFamilyPolicy.REQUIRE_DUAL_STACK,
        (),
        id="dual-stack-policy-without-ipFamilies-means-both-ipv4-first",
    ),
    pytest.param(
        service({"lbctl.io/loadBalancerIPs": "2001:db8::7"}, ipFamilyPolicy="PreferDualStack"),
        (V6, V4),
        IPFamilyPolicy.PREFER_DUAL_STACK,
        ("2001:db8::7",),
        id="dual-stack-policy-without-ipFamilies-requested-family-first",
    ),
]


@pytest.mark.parametrize(("body", "families", "policy", "ips"), FAMILIES)
def test_families_policy_and_requested_ips(
    body: dict[str, Any], families: tuple[Family, ...], policy: IPFamilyPolicy, ips: tuple[str, ...]
) -> None:
    request = adapted(body)
    assert request.families == families
    assert request.family_policy is policy
    assert request.requested_ips == tuple(IP(i) for i in ips)


# --- the rest of the spec ------------------------------------------------------------------------


def test_a_full_service_is_read_field_by_field() -> None:
    body = service(
        {"metallb.io/address-pool": "blue", "metallb.io/allow-shared-ip": "k"},
        ports=[{"port": 53, "protocol": "UDP"}, {"port": 443}, {"name": "dns", "port": 53}],
        externalTrafficPolicy="Local",
        selector={"app": "web", "tier": "front"},
        loadBalancerClass="lbctl.io/lb",
    )
    body["metadata"]["labels"] = {"team": "b", "env": "prod"}
    request = adapted(body, namespace_labels={"zone": "eu", "env": "prod"})
    assert request == ServiceRequest(
        key=key_of(body),
        pool="blue",  # type: ignore[arg-type]
        sharing_key="k",
        ports=(ServicePort("TCP", 53), ServicePort("TCP", 443), ServicePort("UDP", 53)),
        traffic_policy=TrafficPolicy.LOCAL,
        selector=(("app", "web"), ("tier", "front")),
        labels=(("env", "prod"), ("team", "b")),
        namespace_labels=(("env", "prod"), ("zone", "eu")),
        lb_class="lbctl.io/lb",
        created="2026-01-02T03:04:05Z",
    )
    assert request.key == "shop/web"
    assert request.backend_key == (("app", "web"), ("tier", "front"))


@pytest.mark.parametrize(
    ("spec", "policy"),
    [
        pytest.param({}, TrafficPolicy.CLUSTER, id="etp-default-cluster"),
        pytest.param({"externalTrafficPolicy": "Cluster"}, TrafficPolicy.CLUSTER, id="etp-cluster"),
        pytest.param({"externalTrafficPolicy": "Local"}, TrafficPolicy.LOCAL, id="etp-local"),
    ],
)
def test_external_traffic_policy(spec: dict[str, Any], policy: TrafficPolicy) -> None:
    assert adapted(service(**spec)).traffic_policy is policy


@pytest.mark.parametrize(
    ("spec", "lb_class"),
    [
        pytest.param({}, None, id="no-class"),
        pytest.param({"loadBalancerClass": ""}, None, id="empty-class-is-no-class"),
        pytest.param({"loadBalancerClass": "example.com/other"}, "example.com/other", id="class"),
    ],
)
def test_load_balancer_class(spec: dict[str, Any], lb_class: str | None) -> None:
    assert adapted(service(**spec)).lb_class == lb_class


def test_creation_timestamp_from_the_python_client_is_rfc3339() -> None:
    body = service()
    body["metadata"]["creationTimestamp"] = datetime.datetime(
        2026, 1, 2, 4, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert adapted(body).created == "2026-01-02T03:04:05Z"


def test_missing_namespace_is_default() -> None:
    assert key_of({"metadata": {"name": "web"}}) == "default/web"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"type": "LoadBalancer"}, True, id="load-balancer"),
        pytest.param({"type": "ClusterIP"}, False, id="cluster-ip"),
        pytest.param({}, False, id="no-type"),
    ],
)
def test_is_load_balancer(spec: dict[str, Any], expected: bool) -> None:
    assert is_load_balancer({"spec": spec}) is expected


def test_held_ips_reads_ingress_ips_and_ignores_hostnames_and_garbage() -> None:
    body = service()
    body["status"] = {
        "loadBalancer": {
            "ingress": [
                {"ip": "192.0.2.1"},
                {"hostname": "lb.example"},
                {"ip": "not-an-ip"},
                {"ip": 7},
                "garbage",
                {"ip": "2001:db8::1", "ipMode": "VIP"},
                {"ip": "192.0.2.1"},
            ]
        }
    }
    assert held_ips(body) == (IP("192.0.2.1"), IP("2001:db8::1"))
    assert held_ips(service()) == ()
    assert held_ips({"status": {"loadBalancer": {"ingress": "x"}}}) == ()


bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["metadata", "spec", "status", "annotations", "ports", "ipFamilies", "ip"]
            )
            | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(bodies)
def test_adapters_never_raise_on_garbage(body: object) -> None:
    mapping = body if isinstance(body, dict) else {"spec": body, "metadata": body, "status": body}
    assert isinstance(adapt_service(mapping), ServiceRequest | AdaptFailure)
    assert isinstance(adapt_node(mapping), NodeInfo)
    assert isinstance(adapt_endpointslice(mapping), EndpointSliceInfo)
    held_ips(mapping)
    allocated_pool(mapping)


# --- Nodes ---------------------------------------------------------------------------------------


def node(
    conditions: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "node-1", "labels": labels or {}},
        "spec": {"taints": taints or [], **spec},
        "status": {
            "conditions": [
                {"type": k, "status": v} for k, v in (conditions or {"Ready": "True"}).items()
            ],
            "addresses": [
                {"type": "Hostname", "address": "node-1"},
                {"type": "InternalIP", "address": "192.0.2.11"},
                {"type": "ExternalIP", "address": "203.0.113.11"},
                {"type": "InternalIP", "address": "2001:db8::11"},
                {"type": "InternalIP", "address": "garbage"},
            ],
        },
    }


NODES = [
    pytest.param(node(), {"ready": True}, id="ready"),
    pytest.param(node({"Ready": "False"}), {"ready": False}, id="not-ready"),
    pytest.param(node({"Ready": "Unknown"}), {"ready": False}, id="ready-unknown-is-not-ready"),
    pytest.param(node({"MemoryPressure": "False"}), {"ready": False}, id="no-ready-condition"),
    pytest.param(
        node({"Ready": "True", "NetworkUnavailable": "True"}),
        {"ready": True, "network_unavailable": True},
        id="network-unavailable",
    ),
    pytest.param(
        node({"Ready": "True", "NetworkUnavailable": "False"}),
        {"network_unavailable": False},
        id="network-available",
    ),
    pytest.param(
        node(labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
        {"excluded": True},
        id="exclude-label-present-even-empty",
    ),
    pytest.param(node(labels={"zone": "a"}), {"excluded": False}, id="not-excluded"),
    pytest.param(
        node(taints=[{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]),
        {"out_of_service": True},
        id="out-of-service-taint",
    ),
    pytest.param(
        node(taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        {"out_of_service": False},
        id="other-taint",
    ),
    pytest.param(node(unschedulable=True), {"unschedulable": True}, id="cordoned"),
    pytest.param(node(), {"unschedulable": False}, id="schedulable"),
]


@pytest.mark.parametrize(("body", "fields"), NODES)
def test_node_conditions_taints_and_labels(body: dict[str, Any], fields: dict[str, bool]) -> None:
    info = adapt_node(body)
    for name, value in fields.items():
        assert getattr(info, name) is value, name


def test_node_name_labels_and_internal_ips() -> None:
    info = adapt_node(node(labels={"zone": "a", "rack": "r1"}))
    assert info.name == "node-1"
    assert info.labels == (("rack", "r1"), ("zone", "a"))
    assert info.label_map == {"rack": "r1", "zone": "a"}
    assert info.internal_ips == (IP("192.0.2.11"), IP("2001:db8::11"))


# --- EndpointSlices ------------------------------------------------------------------------------


def test_endpointslice_reads_service_nodes_and_conditions() -> None:
    body = {
        "metadata": {
            "name": "web-abc12",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.1"], "nodeName": "a", "conditions": {"ready": True}},
            {"addresses": ["10.1.0.2"], "nodeName": "b", "conditions": {}},
            {
                "addresses": ["10.1.0.3"],
                "nodeName": "c",
                "conditions": {"ready": False, "serving": True, "terminating": True},
            },
            {"addresses": ["10.1.0.4"], "conditions": {"ready": True}},
            {"addresses": ["10.1.0.5"], "nodeName": "d", "conditions": {"ready": False}},
        ],
    }
    info = adapt_endpointslice(body)
    assert (info.name, info.service) == ("web-abc12", "shop/web")
    unset = info.endpoints[1]
    assert (unset.ready, unset.serving, unset.terminating) == (True, True, False)
    draining = info.endpoints[2]
    assert (draining.ready, draining.serving, draining.terminating) == (False, True, True)
    assert info.endpoints[3].node_name is None
    assert info.endpoints[0].addresses == (IP("10.1.0.1"),)
    assert info.nodes_with() == {"a", "b"}
    assert info.nodes_with(serving=True) == {"a", "b", "c"}


def test_endpointslice_without_service_label_has_no_service() -> None:
    assert adapt_endpointslice({"metadata": {"name": "x", "namespace": "n"}}).service is None
