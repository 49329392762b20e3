"""Every allocation rule seen through the API, with one controller for the module."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from controller_bed import Bed, bed, condition, controller, lbctl_config, wait_for
from kubernetes import client

from lbctl.lab.controlplane import ControlPlane

POOLS = """\
- name: public
  addresses: ["192.0.2.0/27", "2001:db8:1::/120"]
- name: reserved
  addresses: ["203.0.113.0/28"]
  autoAssign: false
- name: tiny
  addresses: ["192.0.2.100-192.0.2.101"]
  autoAssign: false
"""
LATE = """\
- name: late
  addresses: ["203.0.113.64/30"]
  autoAssign: false
"""
TINY = {"lbctl.io/address-pool": "tiny"}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with bed(control_plane, tmp_path_factory.mktemp("rules")) as b:
        b.set_config(lbctl_config(POOLS))
        with controller(b):
            yield b


def in_net(ip: str, net: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(net)


def test_requested_ip_annotation_and_spec_are_honoured(world: Bed) -> None:
    ns = world.namespace("requested")
    world.service(ns, "by-annotation", annotations={"lbctl.io/loadBalancerIPs": "203.0.113.5"})
    world.service(ns, "by-spec", loadBalancerIP="203.0.113.6")
    assert world.wait_ips(ns, "by-annotation") == ["203.0.113.5"]
    assert world.wait_ips(ns, "by-spec") == ["203.0.113.6"]
    assert world.wait_pool(ns, "by-annotation") == "reserved"


def test_requested_ip_already_taken_is_unavailable(world: Bed) -> None:
    ns = world.namespace("taken")
    world.service(ns, "first", annotations={"lbctl.io/loadBalancerIPs": "203.0.113.7"})
    world.wait_ips(ns, "first")
    world.service(ns, "second", annotations={"lbctl.io/loadBalancerIPs": "203.0.113.7"})
    cond = world.wait_condition(ns, "second", "RequestedIPUnavailable")
    assert cond["status"] == "False"
    assert "203.0.113.7" in cond["message"]
    assert world.ips(ns, "second") == []


@pytest.mark.parametrize(
    "annotation",
    ["lbctl.io/address-pool", "metallb.universe.tf/address-pool"],
    ids=["lbctl", "metallb"],
)
def test_pool_annotation_selects_the_pool(world: Bed, annotation: str) -> None:
    ns = world.namespace(f"pool-{annotation.split('.', maxsplit=1)[0]}")
    world.service(ns, "svc", annotations={annotation: "reserved"})
    [ip] = world.wait_ips(ns, "svc")
    assert in_net(ip, "203.0.113.0/28")


def test_sharing_key_shares_an_ip_and_a_port_clash_is_a_conflict(world: Bed) -> None:
    ns = world.namespace("sharing")
    shared = {"lbctl.io/allow-shared-ip": "k", "lbctl.io/loadBalancerIPs": "203.0.113.10"}
    world.service(ns, "http", annotations=shared, ports=(80,))
    world.service(ns, "https", annotations=shared, ports=(443,))
    assert world.wait_ips(ns, "http") == ["203.0.113.10"]
    assert world.wait_ips(ns, "https") == ["203.0.113.10"]
    world.service(ns, "clash", annotations=shared, ports=(80,))
    cond = world.wait_condition(ns, "clash", "SharingConflict")
    assert cond["status"] == "False"


def test_dual_stack_gets_one_ip_of_each_family(world: Bed) -> None:
    ns = world.namespace("dual")
    world.service(ns, "both", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    v4, v6 = world.wait_ips(ns, "both", count=2)
    assert in_net(v4, "192.0.2.0/27")
    assert in_net(v6, "2001:db8:1::/120")


def test_service_of_another_class_is_left_alone(world: Bed) -> None:
    ns = world.namespace("classes")
    world.service(ns, "theirs", lb_class="example.com/other")
    world.service(ns, "barrier")  # created after: once it has an IP, "theirs" was seen
    world.wait_ips(ns, "barrier")
    body = world.get(ns, "theirs")
    assert body is not None
    assert world.ips(ns, "theirs") == []
    assert condition(body) is None
    assert "lbctl.io/ip-allocated-from-pool" not in (body["metadata"].get("annotations") or {})


def test_class_change_is_refused_by_the_api_server_and_the_ip_stays(world: Bed) -> None:
    """The API server refuses a new loadBalancerClass on a LoadBalancer Service ("may not
    change once set"), so a held IP never meets one; the reconciler's ClassMismatch release
    is tested in tests/unit (test_controller_reconciler.py)."""
    ns = world.namespace("class-change")
    world.service(ns, "moving", annotations={"lbctl.io/loadBalancerIPs": "203.0.113.11"})
    assert world.wait_ips(ns, "moving") == ["203.0.113.11"]
    with pytest.raises(client.exceptions.ApiException) as refused:
        world.patch(ns, "moving", {"spec": {"loadBalancerClass": "example.com/other"}})
    assert refused.value.status == 422
    assert "may not change once set" in str(refused.value.body)
    assert world.ips(ns, "moving") == ["203.0.113.11"]
    assert world.wait_condition(ns, "moving", "Allocated")["status"] == "True"


def test_type_change_releases_and_removes_our_traces(world: Bed) -> None:
    ns = world.namespace("type-change")
    world.service(ns, "lb", annotations={"lbctl.io/loadBalancerIPs": "203.0.113.12"})
    world.wait_ips(ns, "lb")
    world.patch(ns, "lb", {"spec": {"type": "ClusterIP"}})

    def clean() -> bool:
        body = world.get(ns, "lb")
        assert body is not None
        annotations = body["metadata"].get("annotations") or {}
        return (
            not world.ips(ns, "lb")
            and condition(body) is None
            and "lbctl.io/ip-allocated-from-pool" not in annotations
        )

    wait_for(clean, 5, "type change cleanup")
    world.service(ns, "next", annotations={"lbctl.io/loadBalancerIPs": "203.0.113.12"})
    assert world.wait_ips(ns, "next") == ["203.0.113.12"]


def test_pending_service_gets_the_ip_a_deleted_one_frees(world: Bed) -> None:
    ns = world.namespace("free-up")
    world.service(ns, "a", annotations=TINY)
    world.service(ns, "b", annotations=TINY)
    held = {world.wait_ips(ns, "a")[0], world.wait_ips(ns, "b")[0]}
    assert held == {"192.0.2.100", "192.0.2.101"}
    world.service(ns, "c", annotations=TINY)
    cond = world.wait_condition(ns, "c", "PoolExhausted")
    assert cond["message"] == "pool tiny is full: 2/2 used"
    freed = world.ips(ns, "a")[0]
    world.core.delete_namespaced_service("a", ns)
    assert world.wait_ips(ns, "c") == [freed]
    assert world.wait_condition(ns, "c", "Allocated")["status"] == "True"


def test_pending_service_gets_an_ip_when_its_pool_is_added(world: Bed) -> None:
    ns = world.namespace("late-pool")
    world.service(ns, "early", annotations={"lbctl.io/address-pool": "late"})
    world.wait_condition(ns, "early", "UnknownPool")
    world.set_config(lbctl_config(POOLS + LATE))
    [ip] = world.wait_ips(ns, "early")
    assert in_net(ip, "203.0.113.64/30")
