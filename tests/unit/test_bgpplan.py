"""The BGP planner: who announces each Service to which peers, the routes one node sends, and
the AnnouncedBGP condition's words."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from l2plan_helpers import POOL_A, POOL_B, WEB, ep, node, nodes, slices, svc, zone

from lbctl.core import bgpcondition
from lbctl.core.adapt import EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.bgpcondition import SessionState
from lbctl.core.bgpplan import ServiceRoutes, plan_bgp, routes_for
from lbctl.core.bgproutes import RouteAttrs
from lbctl.core.election import rank
from lbctl.core.model import (
    BGPAdvertisement,
    BGPPeer,
    Community,
    CommunityKind,
    Config,
    NodeName,
    PeerName,
    PoolName,
    ServiceKey,
)
from lbctl.core.reasons import BGPFailure, BGPSuccess, NodeSkip

IP = ipaddress.ip_address
NET = ipaddress.ip_network
R1 = BGPPeer(PeerName("r1"), 64501, 64500, IP("192.0.2.1"))
R6 = BGPPeer(PeerName("r6"), 64501, 64500, IP("2001:db8::1"))
IBGP = BGPPeer(PeerName("ibgp"), 64500, 64500, IP("192.0.2.2"))
ABC = nodes("a", "b", "c")
STD = Community(CommunityKind.STANDARD, (64500, 1))
LARGE = Community(CommunityKind.LARGE, (64500, 1, 2))


EVERY = BGPAdvertisement("every")
Slices = dict[ServiceKey, tuple[EndpointSliceInfo, ...]]


def cfg(*advertisements: BGPAdvertisement, peers: Sequence[BGPPeer] = (R1,)) -> Config:
    return Config(pools=(POOL_A, POOL_B), bgp_advertisements=advertisements, peers=tuple(peers))


def only(
    config: Config,
    service: HeldService | None = None,
    known: Sequence[NodeInfo] = ABC,
    endpoints: Slices | None = None,
) -> ServiceRoutes:
    service = service or svc()
    chosen = slices(WEB, ep("a")) if endpoints is None else endpoints
    found = plan_bgp(config, [service], chosen, known)
    assert len(found) == 1
    return found[0]


def test_every_ready_node_with_a_peer_announces_in_rank_order() -> None:
    plan = only(cfg(EVERY))
    assert plan.failure is None
    assert plan.ranking == rank([NodeName(n) for n in "abc"], IP("192.0.2.10"))
    assert plan.peers == dict.fromkeys(plan.ranking, (R1.name,))
    assert plan.writer == plan.ranking[0]


@pytest.mark.parametrize(
    ("config", "service", "endpoints", "failure"),
    [
        pytest.param(cfg(), svc(), None, BGPFailure.NO_BGP_ADVERTISEMENT, id="no-advertisement"),
        pytest.param(
            cfg(BGPAdvertisement("b-only", pools=(PoolName("b"),))),
            svc(),
            None,
            BGPFailure.NO_BGP_ADVERTISEMENT,
            id="advertisement-of-another-pool",
        ),
        pytest.param(
            cfg(EVERY),
            svc("shop/web", "203.0.113.9"),
            None,
            BGPFailure.NO_BGP_ADVERTISEMENT,
            id="ip-in-no-pool",
        ),
        pytest.param(cfg(EVERY), svc(), {}, BGPFailure.NO_READY_ENDPOINTS, id="no-endpoints"),
        pytest.param(cfg(EVERY, peers=()), svc(), None, BGPFailure.NO_ELIGIBLE_NODE, id="no-peers"),
    ],
)
def test_why_nobody_announces(
    config: Config,
    service: HeldService,
    endpoints: Slices | None,
    failure: BGPFailure,
) -> None:
    plan = only(config, service, endpoints=endpoints)
    assert plan.failure is failure
    assert plan.ranking == ()
    said = bgpcondition.verdict(plan, {}, own_node=NodeName("a"), own_sent=True)
    assert not said.announced and said.reason == failure.value


def test_node_rules_selectors_peers_and_local_endpoints_each_skip_with_their_reason() -> None:
    zoned_peer = BGPPeer(PeerName("rz"), 64501, 64500, IP("192.0.2.1"), node_selectors=(zone("x"),))
    known = (
        node("a", labels={"zone": "x"}),
        node("b", labels={"zone": "y"}),
        node("c", ready=False, labels={"zone": "x"}),
        node("d", labels={"zone": "x", "rack": "2"}),
        node("e", labels={"zone": "x"}),
    )
    adv = BGPAdvertisement("zoned", node_selectors=(zone("x"),))
    config = cfg(adv, peers=(zoned_peer,))
    service = svc(local=True)
    endpoints = slices(WEB, ep("a"), ep("d"), ep("b"))
    plan = only(config, service, known, endpoints)
    assert set(plan.ranking) == {"a", "d"}
    assert plan.skipped == {
        "b": NodeSkip.NODE_NOT_SELECTED,
        "c": NodeSkip.NODE_NOT_READY,
        "e": NodeSkip.NO_LOCAL_ENDPOINT,
    }
    # b is selected by a second advertisement, but no peer applies to it there.
    plan = only(cfg(adv, EVERY, peers=(zoned_peer,)), service, known, endpoints)
    assert plan.skipped[NodeName("b")] is NodeSkip.NO_BGP_PEER


def test_prefixes_go_to_peers_of_their_own_family_only() -> None:
    config = cfg(EVERY, peers=(R1, R6))
    dual = svc("shop/web", "192.0.2.10", "2001:db8::10")
    plan = only(config, dual)
    assert plan.peers[plan.ranking[0]] == (R1.name, R6.name)  # both families' peers named
    routes = routes_for(config, [plan], ABC[0])
    assert routes.desired == {
        R1.name: {NET("192.0.2.10/32"): RouteAttrs()},
        R6.name: {NET("2001:db8::10/128"): RouteAttrs()},
    }
    assert routes.by_service[WEB] == {
        R1.name: frozenset({NET("192.0.2.10/32")}),
        R6.name: frozenset({NET("2001:db8::10/128")}),
    }


def test_attributes_merge_and_local_pref_goes_to_ibgp_only() -> None:
    config = cfg(
        BGPAdvertisement("a1", local_pref=100, communities=(STD,)),
        BGPAdvertisement("a2", local_pref=200, communities=(LARGE, STD)),
        peers=(R1, IBGP),
    )
    plan = only(config)
    desired = routes_for(config, [plan], ABC[0]).desired
    net = NET("192.0.2.10/32")
    assert desired[IBGP.name][net] == RouteAttrs(200, tuple(sorted((LARGE, STD))))
    assert desired[R1.name][net].local_pref is None
    assert set(desired[R1.name][net].communities) == {STD, LARGE}


def test_aggregation_announces_one_prefix_while_any_service_needs_it() -> None:
    config = cfg(BGPAdvertisement("agg", aggregation_length=24, aggregation_length_v6=120))
    two = [svc("shop/web", "192.0.2.10"), svc("shop/api", "192.0.2.77", "2001:db8::5")]
    both = slices("shop/web", ep("a")) | slices("shop/api", ep("a"))
    plans = plan_bgp(config, two, both, ABC)
    desired = routes_for(config, plans, ABC[0]).desired
    assert set(desired[R1.name]) == {NET("192.0.2.0/24")}
    plans = plan_bgp(config, two[:1], both, ABC)
    assert set(routes_for(config, plans, ABC[0]).desired[R1.name]) == {NET("192.0.2.0/24")}
    assert routes_for(config, plan_bgp(config, [], both, ABC), ABC[0]).desired == {}


def test_advertisement_peer_list_limits_the_routes() -> None:
    r2 = BGPPeer(PeerName("r2"), 64501, 64500, IP("192.0.2.3"))
    config = cfg(BGPAdvertisement("to-r2", peers=(r2.name,)), peers=(R1, r2))
    plan = only(config)
    assert plan.peers[plan.ranking[0]] == (r2.name,)
    assert set(routes_for(config, [plan], ABC[0]).desired) == {r2.name}


def test_a_node_not_announcing_sends_nothing_and_an_unknown_node_nothing() -> None:
    config = cfg(EVERY)
    plan = only(config, svc(local=True))
    assert plan.ranking == ("a",)
    assert routes_for(config, [plan], ABC[1]).desired == {}
    assert routes_for(config, [plan], None).desired == {}


def test_other_classes_and_services_without_ips_are_not_planned() -> None:
    config = cfg(EVERY)
    services = [svc(lb_class="other"), HeldService(ServiceKey("x/y"), ()), svc(load_balancer=False)]
    assert plan_bgp(config, services, {}, ABC) == ()


# --- the condition ---------------------------------------------------------------------------


def test_condition_names_nodes_peers_and_session_states() -> None:
    plan = only(cfg(EVERY))
    first, second, third = plan.ranking
    sessions = {
        first: {R1.name: SessionState.ESTABLISHED},
        second: {R1.name: SessionState.DOWN},
    }
    said = bgpcondition.verdict(plan, sessions, own_node=first, own_sent=True)
    assert said.announced and said.reason == BGPSuccess.ANNOUNCED.value
    assert said.message == (
        f"announced 192.0.2.10 by {first} to r1 (Established); {second} to r1 (Down); "
        f"{third} to r1 (Down)"
    )
    not_yet = bgpcondition.verdict(plan, sessions, own_node=first, own_sent=False)
    assert not not_yet.announced
    assert not_yet.reason == BGPFailure.NO_SESSION_ESTABLISHED.value
    assert "r1 (Established, sending)" in not_yet.message


def test_session_annotation_round_trip_and_bad_values_read_as_nothing() -> None:
    text = bgpcondition.encode_sessions({PeerName("b"): SessionState.DOWN,
                                         PeerName("a"): SessionState.ESTABLISHED})  # fmt: skip
    assert text == '{"a":"Established","b":"Down"}'
    body = {"metadata": {"annotations": {bgpcondition.SESSIONS_ANNOTATION: text}}}
    assert bgpcondition.sessions_of(body) == {"a": SessionState.ESTABLISHED, "b": SessionState.DOWN}
    for bad in ("", "[1]", "{", '{"a":"Up"}', '{"a":1}', "x" * 9000, None):
        assert bgpcondition.decode_sessions(bad) == {}


def test_no_eligible_node_message_names_each_reason() -> None:
    known = (node("a", ready=False), node("b", excluded=True))
    plan = only(cfg(EVERY), known=known)
    said = bgpcondition.verdict(plan, {}, own_node=NodeName("a"), own_sent=True)
    assert said.reason == BGPFailure.NO_ELIGIBLE_NODE.value
    assert said.message == "no eligible node for 192.0.2.10: NodeExcluded: b; NodeNotReady: a"
