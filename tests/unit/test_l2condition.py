"""The lbctl.io/AnnouncedL2 condition: exact texts per outcome, and when it is (re)written."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from l2plan_helpers import (
    EVERY_POOL,
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
from lbctl.core.condition import Shown
from lbctl.core.l2condition import (
    CONDITION_TYPE,
    MAX_MESSAGE,
    L2Verdict,
    condition,
    find,
    removal,
    up_to_date,
    verdict,
)
from lbctl.core.l2plan import AnnouncementGroup
from lbctl.core.model import Config, NodeName, ServiceKey

ABC = nodes("a", "b", "c")
API = ServiceKey("shop/api")
CFG = config(EVERY_POOL)
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
A = NodeName("a")


def single(
    cfg: Config = CFG,
    service: HeldService | None = None,
    endpoints: dict[ServiceKey, tuple[EndpointSliceInfo, ...]] | None = None,
    known: tuple[NodeInfo, ...] = ABC,
) -> AnnouncementGroup:
    endpoints = slices(WEB, ep("a")) if endpoints is None else endpoints
    return only(plan(cfg, [service or svc()], endpoints, known))


def shared(web_endpoints: tuple[str, ...] = ("a",)) -> AnnouncementGroup:
    endpoints = {**slices(WEB, *map(ep, web_endpoints)), **slices(API, ep("c"))}
    return only(plan(CFG, [svc(WEB, local=True), svc(API)], endpoints, ABC))


def not_eligible() -> AnnouncementGroup:
    known = (
        node("a", ready=False, labels={"zone": "x"}),
        node("b", labels={"zone": "y"}),
        node("c", labels={"zone": "x"}),
    )
    cfg = config(adv("x-only", selectors=[zone("x")]))
    return single(cfg, svc(local=True), known=known)


SUBNET = "(allowed: one whose subnet holds it)"
VERDICTS = [
    pytest.param(
        single(), WEB, A, ("eth0",),
        ("True", "Announced", "announced 192.0.2.10 by node a on eth0"),
        id="announced-names-the-node-and-interface",
    ),
    pytest.param(
        single(service=svc(WEB, "2001:db8::10", "192.0.2.10")), WEB, A, ("eth0", "eth1"),
        ("True", "Announced", "announced 2001:db8::10, 192.0.2.10 by node a on eth0, eth1"),
        id="announced-lists-every-ip-and-interface",
    ),
    pytest.param(
        shared(), API, A, ("eth0",),
        ("True", "Announced", "announced 192.0.2.10 by node a on eth0 (shared with shop/web)"),
        id="announced-names-the-services-sharing-the-ip",
    ),
    pytest.param(
        shared(web_endpoints=()), WEB, A, ("eth0",),
        ("False", "NoReadyEndpoints", "no ready or serving endpoint in the EndpointSlices of"
         " shop/web; 192.0.2.10 announced by node a for shop/api"),
        id="a-sharer-without-endpoints-is-told-its-ip-serves-the-others",
    ),
    pytest.param(
        single(config(adv("b-only", "b"))), WEB, None, (),
        ("False", "NoL2Advertisement", "pool a: no l2Advertisement announces it"),
        id="no-l2-advertisement-names-the-pool",
    ),
    pytest.param(
        single(service=svc(WEB, "203.0.113.5")), WEB, None, (),
        ("False", "NoL2Advertisement", "203.0.113.5 is in no pool of the config"),
        id="ip-in-no-pool-says-so",
    ),
    pytest.param(
        single(endpoints={}), WEB, A, ("eth0",),
        ("False", "NoReadyEndpoints",
         "no ready or serving endpoint in the EndpointSlices of shop/web"),
        id="no-ready-endpoints-wins-over-any-announcer",
    ),
    pytest.param(
        not_eligible(), WEB, None, (),
        ("False", "NoEligibleNode", "no eligible node for 192.0.2.10: NodeNotSelected"
         " (nodeSelectors of l2Advertisement x-only): b; NodeNotReady: a;"
         " NoLocalEndpoint (externalTrafficPolicy Local): c"),
        id="no-eligible-node-lists-nodes-by-reason-in-reason-order",
    ),
    pytest.param(
        single(known=tuple(node(f"n{i}", ready=False) for i in range(8))), WEB, None, (),
        ("False", "NoEligibleNode",
         "no eligible node for 192.0.2.10: NodeNotReady: n0, n1, n2, n3, n4 and 3 more"),
        id="no-eligible-node-names-five-nodes-per-reason-and-counts-the-rest",
    ),
    pytest.param(
        single(known=()), WEB, None, (),
        ("False", "NoEligibleNode", "no eligible node for 192.0.2.10: no Nodes"),
        id="no-eligible-node-without-any-node",
    ),
    pytest.param(
        single(), WEB, A, (),
        ("False", "NoInterfaceForIP", f"node a has no interface for 192.0.2.10 {SUBNET}"),
        id="no-interface-on-the-announcer-by-subnet",
    ),
    pytest.param(
        single(config(adv("pinned", interfaces=["eth1", "bond0"]))), WEB, A, (),
        ("False", "NoInterfaceForIP",
         "node a has no interface for 192.0.2.10 (allowed: bond0, eth1)"),
        id="no-interface-on-the-announcer-names-the-advertised-interfaces",
    ),
    pytest.param(
        single(known=nodes("a")), WEB, None, (),
        ("False", "NoInterfaceForIP",
         "no eligible node has an interface for 192.0.2.10 (eligible: a)"),
        id="nobody-announcing-with-eligible-nodes-is-no-interface",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("group", "service", "announcer", "interfaces", "want"), VERDICTS)
def test_verdict(
    group: AnnouncementGroup,
    service: ServiceKey,
    announcer: NodeName | None,
    interfaces: tuple[str, ...],
    want: tuple[str, str, str],
) -> None:
    said = verdict(group, service, announcer, interfaces)
    assert (said.status, said.reason, said.message) == want


# --- the condition as written --------------------------------------------------------------------

ANNOUNCED = L2Verdict(True, "Announced", "announced 192.0.2.10 by node a on eth0")
EARLIER = "2026-01-01T00:00:00Z"
NOW_TEXT = "2026-03-04T05:06:07Z"


def written(
    status: str = "True", message: str = ANNOUNCED.message, generation: int = 3
) -> dict[str, object]:
    return {
        "type": CONDITION_TYPE,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": EARLIER,
        "reason": "Announced" if status == "True" else "NoEligibleNode",
        "message": message,
    }


def test_a_new_condition_starts_now() -> None:
    assert condition(ANNOUNCED, generation=3, now=NOW, previous=None) == {
        "type": "lbctl.io/AnnouncedL2",
        "status": "True",
        "observedGeneration": 3,
        "lastTransitionTime": "2026-03-04T05:06:07Z",
        "reason": "Announced",
        "message": "announced 192.0.2.10 by node a on eth0",
    }


@pytest.mark.parametrize(
    ("previous", "since"),
    [
        pytest.param(
            written(message="announced 192.0.2.10 by node b on eth0"),
            EARLIER,
            id="same-status-keeps-the-time",
        ),
        pytest.param(written(status="False"), NOW_TEXT, id="status-flip-moves-the-time"),
        pytest.param({**written(), "lastTransitionTime": None}, NOW_TEXT, id="missing-time-is-set"),
    ],
)
def test_last_transition_time_moves_only_when_the_status_flips(
    previous: dict[str, object], since: str
) -> None:
    assert (
        condition(ANNOUNCED, generation=3, now=NOW, previous=Shown.of(previous))[
            "lastTransitionTime"
        ]
        == since
    )


def test_up_to_date_compares_status_reason_message_and_generation() -> None:
    assert up_to_date(Shown.of(written()), ANNOUNCED, 3)
    assert not up_to_date(None, ANNOUNCED, 3)
    assert not up_to_date(Shown.of(written(generation=2)), ANNOUNCED, 3)
    other = written(message="announced 192.0.2.10 by node b on eth0")
    assert not up_to_date(Shown.of(other), ANNOUNCED, 3)


def test_long_messages_are_clipped_alike_when_written_and_compared() -> None:
    long = L2Verdict(False, "NoEligibleNode", "x" * 5000)
    cond = condition(long, generation=1, now=NOW, previous=None)
    message = cond["message"]
    assert isinstance(message, str) and len(message) == MAX_MESSAGE and message.endswith("...")
    assert up_to_date(Shown.of(cond), long, 1)


def test_find_picks_our_condition_among_others() -> None:
    ours = written()
    status = {"conditions": [{"type": "lbctl.io/IPAllocated"}, "garbage", ours]}
    assert find(status) == Shown("True", "Announced", ANNOUNCED.message, 3, EARLIER)
    assert find({"conditions": "garbage"}) is None
    assert find(None) is None


def test_conditions_read_from_bodies_share_their_status_and_reason_strings() -> None:
    """The speaker keeps one Shown per Service: equal words are one string, not one each."""
    first, second = (find(json.loads(json.dumps({"conditions": [written()]}))) for _ in "ab")
    assert first is not None and second is not None
    assert first.status is second.status and first.reason is second.reason


def test_removal_deletes_only_our_condition() -> None:
    assert removal() == {"type": "lbctl.io/AnnouncedL2", "$patch": "delete"}
