"""The bed's naming and address plan."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.lab import plan
from lbctl.lab.controlplane import SERVICE_CIDRS


def test_runids_are_short_hex_and_distinct() -> None:
    ids = {plan.new_runid() for _ in range(50)}
    assert len(ids) == 50
    assert all(plan.check_runid(i) == i and len(i) == 6 for i in ids)


@pytest.mark.parametrize("bad", ["", "abc", "XYZ123", "12345678901234", "ab-cd"], ids=repr)
def test_bad_runids_are_rejected(bad: str) -> None:
    with pytest.raises(plan.PlanError):
        plan.check_runid(bad)


def test_namespace_names_follow_the_shared_scheme() -> None:
    rid = plan.check_runid("a1b2c3")
    assert plan.ns_name(rid, "node-3") == "lbctl-a1b2c3-node-3"
    assert plan.runid_of("lbctl-a1b2c3-node-3") == "a1b2c3"


@pytest.mark.parametrize("foreign", ["lbctl", "other-a1b2c3-lan", "lbctl-zz-lan", "lbctl--lan"])
def test_runid_of_ignores_namespaces_the_bed_did_not_name(foreign: str) -> None:
    assert plan.runid_of(foreign) is None


@given(st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True))
def test_every_valid_role_gives_a_bridge_port_name_the_kernel_accepts(role: str) -> None:
    assert len(plan.port_name(role)) <= plan.MAX_IFNAME
    assert plan.runid_of(plan.ns_name(plan.check_runid("abcdef"), role)) == "abcdef"


def test_node_addresses_read_alike_in_both_families() -> None:
    host = plan.node_host(3)
    assert (str(host.ip4), str(host.ip6)) == ("192.0.2.13/24", "2001:db8::13/64")
    assert host.mac == "02:00:00:00:01:03"


def test_addresses_stay_inside_documentation_ranges() -> None:
    allowed = [ipaddress.ip_network(n) for n in
               ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]  # fmt: skip
    hosts = [plan.node_host(i) for i in range(1, plan.MAX_NODES + 1)]
    hosts += [plan.ROUTER, plan.CLIENT, plan.OBSERVER, plan.FAR_CLIENT, plan.ROUTER_FAR]
    addrs = [h.addr4 for h in hosts] + [h.addr6 for h in hosts]
    addrs += [plan.pod_address(i, s) for i in (1, plan.MAX_POD_NODES) for s in (1, plan.POD_SLOTS)]
    assert all(any(a in net for net in allowed if net.version == a.version) for a in addrs)
    assert len({h.mac for h in hosts}) == len(hosts)


def test_bgp_vips_never_look_on_link_to_the_far_client() -> None:
    assert not plan.BGP_VIPS4.overlaps(plan.FAR4)
    assert not any(plan.LAN4.overlaps(n) for n in (plan.FAR4, plan.PODS4, plan.BGP_VIPS4))


def test_pod_networks_are_disjoint_per_node() -> None:
    nets = [plan.pod_network(i) for i in range(1, plan.MAX_POD_NODES + 1)]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    assert all(n.subnet_of(plan.PODS4) for n in nets)
    assert plan.pod_address(2, 1) == ipaddress.IPv4Address("198.51.100.17")


def test_pods_and_service_cluster_ips_never_overlap() -> None:
    v4 = [n for c in SERVICE_CIDRS if (n := ipaddress.ip_network(c)).version == 4]
    assert v4, "an IPv4 Service range exists"
    others = (plan.PODS4, plan.LAN4, plan.FAR4)
    assert not any(s.overlaps(n) for s in v4 for n in others)


@pytest.mark.parametrize(("index", "slot"), [(0, 1), (16, 1), (1, 0), (1, plan.POD_SLOTS + 1)])
def test_out_of_plan_pods_and_nodes_are_refused(index: int, slot: int) -> None:
    with pytest.raises(plan.PlanError):
        plan.pod_address(index, slot)
