"""The L2 planner's groups: shared IPs, the key IP, interfaces, who is planned; and the
invariants every speaker relies on (same inputs, same plan; rendezvous stability)."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from l2plan_helpers import (
    EVERY_POOL,
    IP,
    WEB,
    adv,
    config,
    ep,
    node,
    nodes,
    only,
    plan,
    slices,
    svc,
    zone,
)

from lbctl.core.adapt import EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.election import rank
from lbctl.core.eligibility import node_skip
from lbctl.core.model import Config, L2Advertisement, NodeName, ServiceKey, TrafficPolicy
from lbctl.core.reasons import L2Failure, NodeSkip

# A loaded CI machine must not turn one slow example into a failure.
NO_DEADLINE = settings(deadline=None)
ABC = nodes("a", "b", "c")
API = ServiceKey("shop/api")
CFG = config(EVERY_POOL)


def both(
    web: tuple[str, ...], api: tuple[str, ...]
) -> dict[ServiceKey, tuple[EndpointSliceInfo, ...]]:
    return {**slices(WEB, *(ep(n) for n in web)), **slices(API, *(ep(n) for n in api))}


# --- groups --------------------------------------------------------------------------------------


def test_services_sharing_an_ip_form_one_group_with_one_ranking() -> None:
    group = only(
        plan(CFG, [svc(WEB, "192.0.2.10"), svc(API, "192.0.2.10")], both(("a",), ("a",)), ABC)
    )
    assert group.services == (API, WEB)
    assert group.ips == (IP("192.0.2.10"),)
    assert group.owner == group.ranking[0]


def test_sharing_is_transitive() -> None:
    services = [
        svc("ns/a", "192.0.2.1", "2001:db8::1"),
        svc("ns/b", "2001:db8::1", "192.0.2.2"),
        svc("ns/c", "192.0.2.2"),
    ]
    endpoints = {k: v for s in services for k, v in slices(s.key, ep("a")).items()}
    group = only(plan(CFG, services, endpoints, ABC))
    assert group.services == ("ns/a", "ns/b", "ns/c")
    assert group.ips == (IP("192.0.2.1"), IP("2001:db8::1"), IP("192.0.2.2"))


def test_key_ip_is_the_first_ingress_ip_of_the_first_service_by_key() -> None:
    services = [svc("shop/b", "2001:db8::7", "192.0.2.7"), svc("shop/a", "192.0.2.7")]
    endpoints = {**slices("shop/a", ep("a")), **slices("shop/b", ep("a"))}
    group = only(plan(CFG, services, endpoints, ABC))
    assert group.key_ip == IP("192.0.2.7")
    assert group.ips == (IP("192.0.2.7"), IP("2001:db8::7"))
    assert group.ranking == rank({NodeName("a"), NodeName("b"), NodeName("c")}, IP("192.0.2.7"))


def test_key_ip_of_a_dual_stack_service_is_its_first_ingress_ip_not_the_smallest() -> None:
    group = only(plan(CFG, [svc(WEB, "2001:db8::7", "192.0.2.7")], slices(WEB, ep("a")), ABC))
    assert group.key_ip == IP("2001:db8::7")


def test_services_without_a_common_ip_are_separate_groups_ordered_by_key() -> None:
    services = [svc("z/web", "192.0.2.1"), svc("a/web", "192.0.2.2")]
    endpoints = {**slices("z/web", ep("a")), **slices("a/web", ep("a"))}
    groups = plan(CFG, services, endpoints, ABC)
    assert [g.services for g in groups] == [("a/web",), ("z/web",)]
    assert [g.key_ip for g in groups] == [IP("192.0.2.2"), IP("192.0.2.1")]


def test_a_node_must_be_eligible_for_every_service_of_the_group() -> None:
    services = [svc(WEB, local=True), svc(API, local=True)]
    group = only(plan(CFG, services, both(("a", "b"), ("b", "c")), ABC))
    assert group.ranking == ("b",)
    assert dict(group.skipped) == {"a": NodeSkip.NO_LOCAL_ENDPOINT, "c": NodeSkip.NO_LOCAL_ENDPOINT}


def test_an_etp_cluster_sharer_does_not_widen_an_etp_local_one() -> None:
    services = [svc(WEB, local=True), svc(API)]
    group = only(plan(CFG, services, both(("a",), ("c",)), ABC))
    assert group.ranking == ("a",)


def test_a_service_without_endpoints_does_not_veto_its_sharers() -> None:
    services = [svc(WEB, local=True), svc(API)]
    group = only(plan(CFG, services, both((), ("c",)), ABC))
    assert set(group.ranking) == {"a", "b", "c"}
    assert group.idle == (WEB,)
    assert group.failure is None


def test_a_group_where_no_service_has_an_endpoint_is_no_ready_endpoints() -> None:
    group = only(plan(CFG, [svc(WEB), svc(API)], {}, ABC))
    assert group.failure is L2Failure.NO_READY_ENDPOINTS
    assert group.idle == (API, WEB)
    assert group.ranking == ()
    assert group.owner is None
    assert group.monitors == ()


def test_services_that_are_not_ours_to_announce_are_left_out() -> None:
    services = [
        svc("ns/cluster-ip", "192.0.2.1", load_balancer=False),
        svc("ns/other-class", "192.0.2.2", lb_class="example.com/lb"),
        HeldService(ServiceKey("ns/pending"), ips=()),
        svc("ns/ours", "192.0.2.4"),
    ]
    endpoints = {k: v for s in services for k, v in slices(s.key, ep("a")).items()}
    assert [g.services for g in plan(CFG, services, endpoints, ABC)] == [("ns/ours",)]
    classed = plan(CFG, services, endpoints, ABC, lb_class="example.com/lb")
    assert [g.services for g in classed] == [("ns/other-class",)]


def test_a_later_service_with_the_same_key_replaces_an_earlier_one() -> None:
    services = [svc(WEB, "192.0.2.1"), svc(WEB, "192.0.2.2")]
    assert only(plan(CFG, services, slices(WEB, ep("a")), ABC)).ips == (IP("192.0.2.2"),)


# --- interfaces ----------------------------------------------------------------------------------

ZONED = (node("a", labels={"zone": "x"}), node("b", labels={"zone": "y"}), node("c"))


def interfaces_of(*advertisements: L2Advertisement) -> dict[str, tuple[str, ...]]:
    group = only(plan(config(*advertisements), [svc()], slices(WEB, ep("a")), ZONED))
    return {n: group.interfaces_for(NodeName(n)) for n in ("a", "b", "c")}


def test_interfaces_are_the_union_of_the_advertisements_selecting_the_node() -> None:
    got = interfaces_of(
        adv("x", "a", selectors=[zone("x")], interfaces=["eth1"]),
        adv("all", interfaces=["eth2", "eth0"]),
    )
    assert got == {"a": ("eth0", "eth1", "eth2"), "b": ("eth0", "eth2"), "c": ("eth0", "eth2")}


def test_an_advertisement_naming_no_interface_means_the_vip_subnet_for_its_nodes() -> None:
    got = interfaces_of(
        adv("x-eth1", selectors=[zone("x")], interfaces=["eth1"]),
        adv("x-subnet", selectors=[zone("x")]),
        adv("y-eth3", selectors=[zone("y")], interfaces=["eth3"]),
    )
    assert got == {"a": (), "b": ("eth3",), "c": ()}  # c: selected by nobody, so ()
    group = only(
        plan(config(adv("y", selectors=[zone("y")])), [svc()], slices(WEB, ep("a")), ZONED)
    )
    assert group.ranking == ("b",)
    assert NodeName("c") not in group.interfaces


def test_advertisement_names_are_in_the_group() -> None:
    cfg = config(adv("first", "a"), adv("other-pool", "b"), adv("second"))
    assert only(plan(cfg, [svc()], slices(WEB, ep("a")), ABC)).advertisements == ("first", "second")


# --- invariants ----------------------------------------------------------------------------------

NAMES = [f"n{i}" for i in range(6)]
IPS = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "198.51.100.1", "203.0.113.1"]

node_infos = st.builds(
    lambda name, ready, flags, z: node(name, ready=ready, labels={"zone": z}, **flags),
    st.sampled_from(NAMES),
    st.booleans(),
    st.fixed_dictionaries(
        {},
        optional={
            f: st.booleans()
            for f in ("excluded", "network_unavailable", "out_of_service", "unreachable")
        },
    ),
    st.sampled_from(["x", "y"]),
)
known_nodes = st.lists(node_infos, max_size=6, unique_by=lambda n: n.name)
advertisements = st.lists(
    st.builds(
        lambda i, pools, sel, ifs: adv(f"adv{i}", *pools, selectors=sel, interfaces=ifs),
        st.integers(0, 3),
        st.lists(st.sampled_from(["a", "b"]), unique=True, max_size=2),
        st.lists(st.sampled_from(["x", "y"]).map(zone), unique=True, max_size=2),
        st.lists(st.sampled_from(["eth0", "eth1"]), unique=True, max_size=2),
    ),
    max_size=3,
    unique_by=lambda a: a.name,
)
held = st.lists(
    st.builds(
        lambda i, ips, local: svc(f"ns/s{i}", *ips, local=local),
        st.integers(0, 5),
        st.lists(st.sampled_from(IPS), min_size=1, max_size=2, unique=True),
        st.booleans(),
    ),
    max_size=5,
)
endpoint_sets = st.dictionaries(
    st.integers(0, 5).map(lambda i: f"ns/s{i}"),
    st.lists(
        st.builds(
            lambda n, ready, serving: ep(n, ready=ready, serving=serving),
            st.sampled_from([*NAMES, None]),
            st.booleans(),
            st.booleans(),
        ),
        max_size=4,
    ),
)

Endpoints = dict[ServiceKey, tuple[EndpointSliceInfo, ...]]


@st.composite
def inputs(draw: st.DrawFn) -> tuple[Config, list[HeldService], Endpoints, list[NodeInfo]]:
    cfg = config(*draw(advertisements))
    by_service = draw(endpoint_sets)
    endpoints = {k: v for key, eps in by_service.items() for k, v in slices(key, *eps).items()}
    return cfg, draw(held), endpoints, draw(known_nodes)


Inputs = tuple[Config, list[HeldService], Endpoints, list[NodeInfo]]


@NO_DEADLINE
@given(inputs(), st.randoms(use_true_random=False))
def test_every_speaker_computes_the_same_plan_whatever_the_input_order(
    given_inputs: Inputs, rnd: random.Random
) -> None:
    cfg, services, endpoints, known = given_inputs
    first = plan(cfg, services, endpoints, known)
    unique = list({s.key: s for s in services}.values())  # order only matters among duplicates
    rnd.shuffle(unique)
    rnd.shuffle(known)
    shuffled_endpoints = dict(rnd.sample(sorted(endpoints.items()), len(endpoints)))
    assert plan(cfg, unique, shuffled_endpoints, known) == first


@NO_DEADLINE
@given(inputs())
def test_groups_partition_the_services_and_their_ips(given_inputs: Inputs) -> None:
    cfg, services, endpoints, known = given_inputs
    groups = plan(cfg, services, endpoints, known)
    keys = [k for g in groups for k in g.services]
    ips = [ip for g in groups for ip in g.ips]
    assert sorted(keys) == sorted({s.key for s in services})
    assert len(ips) == len(set(ips))


@NO_DEADLINE
@given(inputs())
def test_the_owner_is_the_first_eligible_node_and_every_node_is_ranked_or_skipped(
    given_inputs: Inputs,
) -> None:
    cfg, services, endpoints, known = given_inputs
    by_name = {n.name: n for n in known}
    for group in plan(cfg, services, endpoints, known):
        assert (group.failure is None) == bool(group.ranking)
        assert group.owner == (group.ranking[0] if group.ranking else None)
        assert group.ranking == rank(set(group.ranking), group.key_ip)
        assert all(node_skip(by_name[n]) is None for n in group.ranking)
        assert set(group.ranking) <= set(group.interfaces)
        if group.failure in (None, L2Failure.NO_ELIGIBLE_NODE):
            assert not set(group.ranking) & set(group.skipped)
            assert set(group.ranking) | set(group.skipped) == set(by_name)


@NO_DEADLINE
@given(inputs(), st.data())
def test_a_node_going_not_ready_leaves_the_order_of_the_others_alone(
    given_inputs: Inputs, data: st.DataObject
) -> None:
    cfg, services, endpoints, known = given_inputs
    # ETP Cluster: under Local, losing the last ready node may admit serving ones (fallback).
    services = [replace(s, traffic_policy=TrafficPolicy.CLUSTER) for s in services]
    before = plan(cfg, services, endpoints, known)
    ranked = sorted({n for g in before for n in g.ranking}) or [NodeName("nobody")]
    gone = data.draw(st.sampled_from(ranked))
    after = plan(
        cfg, services, endpoints, [replace(n, ready=n.ready and n.name != gone) for n in known]
    )
    for old, new in zip(before, after, strict=True):
        assert new.ranking == tuple(n for n in old.ranking if n != gone)
