"""The L2 planner: one table row per eligibility rule, then groups, interfaces and invariants."""

from __future__ import annotations

from dataclasses import dataclass, field

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
from lbctl.core.election import rank
from lbctl.core.eligibility import node_skip
from lbctl.core.model import Config, ServiceKey
from lbctl.core.reasons import L2Failure, NodeSkip

ABC = nodes("a", "b", "c")
ZONED = (node("a", labels={"zone": "x"}), node("b", labels={"zone": "y"}), node("c"))


@dataclass
class Case:
    eligible: set[str]
    skipped: dict[str, NodeSkip] = field(default_factory=dict)
    failure: L2Failure | None = None
    cfg: Config = field(default_factory=lambda: config(EVERY_POOL))
    known: tuple[NodeInfo, ...] = ABC
    service: HeldService = field(default_factory=svc)
    endpoints: dict[ServiceKey, tuple[EndpointSliceInfo, ...]] = field(
        default_factory=lambda: slices(WEB, ep("a"))
    )


NOT_SELECTED, NOT_READY = NodeSkip.NODE_NOT_SELECTED, NodeSkip.NODE_NOT_READY
NO_LOCAL = NodeSkip.NO_LOCAL_ENDPOINT

ELIGIBILITY = [
    pytest.param(Case({"a", "b", "c"}), id="every-healthy-node-is-eligible"),
    # Node signals (ours and MetalLB's)
    pytest.param(
        Case({"a", "b"}, {"c": NodeSkip.NODE_EXCLUDED}, known=(*ABC[:2], node("c", excluded=True))),
        id="exclude-from-external-load-balancers-label-skips-the-node",
    ),
    pytest.param(
        Case(
            {"a", "b"},
            {"c": NodeSkip.NODE_NETWORK_UNAVAILABLE},
            known=(*ABC[:2], node("c", network_unavailable=True)),
        ),
        id="network-unavailable-skips-the-node",
    ),
    pytest.param(
        Case({"b", "c"}, {"a": NOT_READY}, known=(node("a", ready=False), *ABC[1:])),
        id="not-ready-or-unknown-skips-the-node",
    ),
    pytest.param(
        Case(
            {"b", "c"},
            {"a": NodeSkip.NODE_UNREACHABLE},
            known=(node("a", unreachable=True), *ABC[1:]),
        ),
        id="unreachable-taint-skips-the-node",
    ),
    pytest.param(
        Case(
            {"b", "c"},
            {"a": NodeSkip.NODE_OUT_OF_SERVICE},
            known=(node("a", ready=False, unreachable=True, out_of_service=True), *ABC[1:]),
        ),
        id="out-of-service-is-named-before-unreachable-and-not-ready",
    ),
    pytest.param(
        Case({"a", "b", "c"}, known=(node("a", unschedulable=True), *ABC[1:])),
        id="cordoned-node-stays-eligible",
    ),
    # Advertisements: pools and node selectors
    pytest.param(
        Case(
            {"a"},
            {"b": NOT_SELECTED, "c": NOT_SELECTED},
            cfg=config(adv("x", selectors=[zone("x")])),
            known=ZONED,
        ),
        id="node-selectors-limit-the-nodes",
    ),
    pytest.param(
        Case(
            {"a", "b"},
            {"c": NOT_SELECTED},
            cfg=config(adv("x", "a", selectors=[zone("x")]), adv("y", "a", selectors=[zone("y")])),
            known=ZONED,
        ),
        id="a-node-selected-by-any-advertisement-of-the-pool-is-eligible",
    ),
    pytest.param(
        Case(
            {"a", "b"},
            {"c": NOT_SELECTED},
            cfg=config(adv("xy", selectors=[zone("x"), zone("y")])),
            known=ZONED,
        ),
        id="node-selectors-of-one-advertisement-are-an-or",
    ),
    pytest.param(
        Case({"a", "b", "c"}, cfg=config(adv("a-only", "a")), known=ZONED),
        id="empty-node-selectors-select-every-node",
    ),
    pytest.param(
        Case(
            {"a"},
            {"b": NOT_SELECTED, "c": NOT_SELECTED},
            cfg=config(adv("x", "a", selectors=[zone("x")]), adv("y", "b", selectors=[zone("y")])),
            known=ZONED,
        ),
        id="an-advertisement-of-another-pool-selects-nobody",
    ),
    pytest.param(
        Case(set(), failure=L2Failure.NO_L2_ADVERTISEMENT, cfg=config(adv("b-only", "b"))),
        id="pool-without-l2-advertisement-is-no-l2-advertisement",
    ),
    pytest.param(
        Case(set(), failure=L2Failure.NO_L2_ADVERTISEMENT, service=svc(WEB, "203.0.113.5")),
        id="ip-in-no-pool-is-no-l2-advertisement",
    ),
    pytest.param(
        Case(
            {"a", "b", "c"},
            cfg=config(adv("a-only", "a")),
            service=svc(WEB, "203.0.113.5", pool="a"),
        ),
        id="ip-in-no-pool-goes-by-the-allocated-from-pool-annotation",
    ),
    pytest.param(
        Case(
            set(),
            failure=L2Failure.NO_L2_ADVERTISEMENT,
            cfg=config(adv("a-only", "a")),
            service=svc(WEB, "198.51.100.5", pool="a"),
        ),
        id="the-pool-holding-the-ip-wins-over-the-annotation",
    ),
    pytest.param(
        Case(
            set(),
            failure=L2Failure.NO_L2_ADVERTISEMENT,
            service=svc(WEB, "203.0.113.5", pool="gone"),
        ),
        id="annotation-naming-no-configured-pool-is-ignored",
    ),
    # Endpoints
    pytest.param(
        Case(set(), failure=L2Failure.NO_READY_ENDPOINTS, endpoints={}),
        id="no-endpointslice-is-no-ready-endpoints",
    ),
    pytest.param(
        Case(
            set(),
            failure=L2Failure.NO_READY_ENDPOINTS,
            endpoints=slices(WEB, ep("a", ready=False, serving=False)),
        ),
        id="only-unready-endpoints-is-no-ready-endpoints",
    ),
    pytest.param(
        Case({"a", "b", "c"}, endpoints=slices(WEB, ep(None))),
        id="an-endpoint-without-a-node-counts-as-ready-somewhere",
    ),
    pytest.param(
        Case({"a", "b", "c"}, endpoints=slices(WEB, ep("a", ready=False, serving=True))),
        id="a-terminating-serving-endpoint-keeps-the-ip-announced",
    ),
    pytest.param(
        Case({"a", "b", "c"}, endpoints=slices(WEB, ep("z"))),
        id="etp-cluster-any-eligible-node-even-without-a-local-endpoint",
    ),
    pytest.param(
        Case(
            {"b"},
            {"a": NO_LOCAL, "c": NO_LOCAL},
            service=svc(local=True),
            endpoints=slices(WEB, ep("b")),
        ),
        id="etp-local-needs-a-ready-local-endpoint",
    ),
    pytest.param(
        Case(
            {"b"},
            {"a": NO_LOCAL, "c": NO_LOCAL},
            service=svc(local=True),
            endpoints=slices(WEB, ep("a", ready=False, serving=True), ep("b")),
        ),
        id="etp-local-a-draining-node-yields-to-one-with-a-ready-pod",
    ),
    pytest.param(
        Case(
            {"a"},
            {"b": NO_LOCAL, "c": NO_LOCAL},
            service=svc(local=True),
            endpoints=slices(
                WEB, ep("a", ready=False, serving=True), ep("b", ready=False, serving=False)
            ),
        ),
        id="etp-local-falls-back-to-serving-local-endpoints-like-kube-proxy",
    ),
    pytest.param(
        Case(
            set(),
            {"a": NOT_READY, "b": NO_LOCAL, "c": NO_LOCAL},
            L2Failure.NO_ELIGIBLE_NODE,
            known=(node("a", ready=False), *ABC[1:]),
            service=svc(local=True),
        ),
        id="etp-local-with-the-only-endpoint-on-a-skipped-node-is-no-eligible-node",
    ),
    pytest.param(
        Case(set(), {"a": NOT_READY}, L2Failure.NO_ELIGIBLE_NODE, known=(node("a", ready=False),)),
        id="every-node-skipped-is-no-eligible-node",
    ),
    pytest.param(
        Case(set(), {}, L2Failure.NO_ELIGIBLE_NODE, known=()),
        id="no-nodes-is-no-eligible-node",
    ),
]


@pytest.mark.parametrize("case", ELIGIBILITY)
def test_eligibility(case: Case) -> None:
    group = only(plan(case.cfg, [case.service], case.endpoints, case.known))
    assert set(group.ranking) == case.eligible
    assert dict(group.skipped) == case.skipped
    assert group.failure is case.failure
    assert group.ranking == rank(set(group.ranking), group.key_ip)


NODE_SKIPS = [
    pytest.param(node("n"), None, id="healthy"),
    pytest.param(
        node("n", excluded=True, ready=False), NodeSkip.NODE_EXCLUDED, id="excluded-first"
    ),
    pytest.param(
        node("n", network_unavailable=True, unreachable=True),
        NodeSkip.NODE_NETWORK_UNAVAILABLE,
        id="network-unavailable-before-unreachable",
    ),
    pytest.param(
        node("n", unreachable=True, ready=False),
        NodeSkip.NODE_UNREACHABLE,
        id="unreachable-before-not-ready",
    ),
]


@pytest.mark.parametrize(("info", "reason"), NODE_SKIPS)
def test_node_skip_names_the_first_reason(info: NodeInfo, reason: NodeSkip | None) -> None:
    assert node_skip(info) is reason
