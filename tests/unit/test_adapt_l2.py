"""What the L2 speaker reads of Service and Node bodies: HeldService and the unreachable taint."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.adapt import HeldService, adapt_held_service, adapt_node
from lbctl.core.model import TrafficPolicy

# A loaded CI machine must not turn one slow example into a failure.
NO_DEADLINE = settings(deadline=None)
IP = ipaddress.ip_address


def service(
    annotations: dict[str, Any] | None = None,
    ingress: list[Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations or {}},
        "spec": {"type": "LoadBalancer", **spec},
        "status": {
            "loadBalancer": {"ingress": [{"ip": "192.0.2.10"}] if ingress is None else ingress}
        },
    }


def test_held_service_reads_key_ips_policy_pool_type_and_class() -> None:
    body = service(
        {"lbctl.io/ip-allocated-from-pool": "public"},
        [{"ip": "2001:db8::10"}, {"hostname": "lb.example"}, {"ip": "192.0.2.10"}],
        externalTrafficPolicy="Local",
        loadBalancerClass="lbctl.io/lb",
    )
    assert adapt_held_service(body) == HeldService(
        key="shop/web",  # type: ignore[arg-type]
        ips=(IP("2001:db8::10"), IP("192.0.2.10")),  # ingress order kept: the first is the key
        traffic_policy=TrafficPolicy.LOCAL,
        allocated_pool="public",  # type: ignore[arg-type]
        load_balancer=True,
        lb_class="lbctl.io/lb",
    )


HELD = [
    pytest.param(service(), {"traffic_policy": TrafficPolicy.CLUSTER}, id="etp-unset-is-cluster"),
    pytest.param(
        service(externalTrafficPolicy="Cluster"),
        {"traffic_policy": TrafficPolicy.CLUSTER},
        id="etp-cluster",
    ),
    pytest.param(
        service(externalTrafficPolicy="Bogus"),
        {"traffic_policy": TrafficPolicy.CLUSTER},
        id="etp-unknown-reads-as-cluster",
    ),
    pytest.param(
        service({"metallb.universe.tf/ip-allocated-from-pool": "legacy"}),
        {"allocated_pool": "legacy"},
        id="pool-from-metallb-legacy-annotation",
    ),
    pytest.param(service(), {"allocated_pool": None}, id="no-pool-annotation"),
    pytest.param(service(type="ClusterIP"), {"load_balancer": False}, id="not-a-load-balancer"),
    pytest.param(service(ingress=[]), {"ips": ()}, id="no-ingress-no-ips"),
    pytest.param(service(), {"lb_class": None}, id="no-class"),
]


@pytest.mark.parametrize(("body", "fields"), HELD)
def test_held_service_fields(body: dict[str, Any], fields: dict[str, object]) -> None:
    held = adapt_held_service(body)
    for name, value in fields.items():
        assert getattr(held, name) == value, name


@NO_DEADLINE
@given(
    st.recursive(
        st.none() | st.text(max_size=6) | st.integers(),
        lambda x: (
            st.lists(x)
            | st.dictionaries(
                st.sampled_from(["metadata", "spec", "status", "loadBalancer", "ingress", "ip"]), x
            )
        ),
        max_leaves=15,
    )
)
def test_held_service_never_raises_on_garbage(body: object) -> None:
    mapping = body if isinstance(body, dict) else {"spec": body, "status": body}
    assert isinstance(adapt_held_service(mapping), HeldService)


UNREACHABLE = "node.kubernetes.io/unreachable"


def taint(key: str, effect: str) -> dict[str, str]:
    return {"key": key, "effect": effect}


@pytest.mark.parametrize(
    ("taints", "unreachable"),
    [
        pytest.param([taint(UNREACHABLE, "NoExecute")], True, id="no-execute"),
        pytest.param([taint(UNREACHABLE, "NoSchedule")], True, id="no-schedule"),
        pytest.param([taint("node.kubernetes.io/not-ready", "NoExecute")], False, id="other-taint"),
        pytest.param([], False, id="untainted"),
    ],
)
def test_node_unreachable_taint_any_effect(taints: list[dict[str, str]], unreachable: bool) -> None:
    body = {"metadata": {"name": "n"}, "spec": {"taints": taints}}
    assert adapt_node(body).unreachable is unreachable
