"""Allocation rules of lbctl.core.allocator, one table row per rule (order, scopes, sharing...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from test_allocator_helpers import config, failed, ip, ips, key, pool, svc

from lbctl.core.allocator import Allocator
from lbctl.core.model import (
    AllocationScope,
    Config,
    Family,
    IPFamilyPolicy,
    LabelSelector,
    SelectorOperator,
    SelectorRequirement,
    ServiceRequest,
    TrafficPolicy,
)
from lbctl.core.reasons import AllocFailure

DUAL_PREFER = IPFamilyPolicy.PREFER_DUAL_STACK
DUAL_REQUIRE = IPFamilyPolicy.REQUIRE_DUAL_STACK
LOCAL = TrafficPolicy.LOCAL


def scoped(priority: int = 0, **kw: object) -> AllocationScope:
    return AllocationScope(priority=priority, **kw)  # type: ignore[arg-type]


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(match_labels=tuple(sorted(labels.items())))


@dataclass
class Case:
    cfg: Config
    req: ServiceRequest
    before: list[ServiceRequest] = field(default_factory=list)
    want: tuple[str, ...] = ()
    reason: AllocFailure | None = None
    message: str = ""


def run(case: Case) -> None:
    alloc = Allocator(case.cfg)
    for r in case.before:
        ips(alloc.allocate(r))
    result = alloc.allocate(case.req)
    if case.reason is None:
        assert ips(result) == case.want
    else:
        fail = failed(result)
        assert fail.reason is case.reason
        assert case.message in fail.message


A = pool("a", "192.0.2.0/30")
B = pool("b", "198.51.100.0/30")
V6 = pool("v6", "2001:db8::/126")
DUAL = pool("dual", "203.0.113.0/30", "2001:db8:1::/126")

ORDER_CASES = [
    Case(config(B, A), svc("s"), want=("192.0.2.0",)),
    Case(
        config(A, pool("z", "198.51.100.0/30", scope=scoped(5))),
        svc("s"),
        want=("198.51.100.0",),
    ),
    Case(
        config(
            pool("x", "192.0.2.0/30", scope=scoped(9)),
            pool("y", "198.51.100.0/30", scope=scoped(1)),
        ),
        svc("s"),
        want=("198.51.100.0",),
    ),
    Case(
        config(
            pool("y", "198.51.100.0/30", scope=scoped(1)),
            pool("x", "192.0.2.0/30", scope=scoped(1)),
        ),
        svc("s"),
        want=("192.0.2.0",),
    ),
    Case(config(pool("a", "192.0.2.0/30", auto=False), B), svc("s"), want=("198.51.100.0",)),
    Case(config(pool("a", "192.0.2.0/30", auto=False), B), svc("s", pool="a"), want=("192.0.2.0",)),
    Case(
        config(pool("a", "192.0.2.0/30", auto=False), B),
        svc("s", requested_ips=["192.0.2.2"]),
        want=("192.0.2.2",),
    ),
    Case(config(A), svc("s"), before=[svc("t")], want=("192.0.2.1",)),
    Case(
        config(pool("a", "192.0.2.8-192.0.2.9", "192.0.2.1-192.0.2.2")),
        svc("s"),
        want=("192.0.2.1",),
    ),
    Case(config(pool("a", "192.0.2.0/24", avoid=True)), svc("s"), want=("192.0.2.1",)),
    Case(
        config(pool("a", "192.0.2.254-192.0.3.1", avoid=True)),
        svc("s"),
        before=[svc("t")],
        want=("192.0.3.1",),
    ),
    Case(config(A, pool("v6", "2001:db8::/126")), svc("s", families=[6]), want=("2001:db8::",)),
]
ORDER_IDS = [
    "unscoped-pools-by-name",
    "scoped-pools-before-unscoped",
    "lower-priority-first",
    "priority-tie-broken-by-name",
    "auto-assign-false-skipped",
    "auto-assign-false-by-pool-annotation",
    "auto-assign-false-by-requested-ip",
    "lowest-free-address-first",
    "ranges-in-address-order",
    "avoid-buggy-skips-dot-zero",
    "avoid-buggy-skips-dot-255-and-next-dot-zero",
    "primary-family-from-ip-families",
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=ORDER_IDS)
def test_auto_assign_order(case: Case) -> None:
    run(case)


NS_SCOPE = scoped(namespaces=("prod",))
NSSEL_SCOPE = scoped(namespace_selectors=(sel(team="web"),))
SVCSEL_SCOPE = scoped(service_selectors=(sel(tier="edge"),))
EXPR = SelectorRequirement("tier", SelectorOperator.IN, ("edge", "core"))
EXPR_SCOPE = scoped(service_selectors=(LabelSelector(match_expressions=(EXPR,)),))


def scoped_cfg(scope: AllocationScope) -> Config:
    return config(pool("scoped", "192.0.2.0/30", scope=scope), B)


SCOPE_CASES = [
    (NS_SCOPE, svc("s", ns="prod"), "192.0.2.0"),
    (NS_SCOPE, svc("s", ns="dev"), "198.51.100.0"),
    (NSSEL_SCOPE, svc("s", namespace_labels=(("team", "web"),)), "192.0.2.0"),
    (NSSEL_SCOPE, svc("s", namespace_labels=(("team", "db"),)), "198.51.100.0"),
    (SVCSEL_SCOPE, svc("s", labels=(("tier", "edge"),)), "192.0.2.0"),
    (SVCSEL_SCOPE, svc("s", labels=()), "198.51.100.0"),
    (EXPR_SCOPE, svc("s", labels=(("tier", "core"),)), "192.0.2.0"),
    (
        scoped(namespaces=("prod",), service_selectors=(sel(tier="edge"),)),
        svc("s", ns="prod", labels=(("tier", "db"),)),
        "198.51.100.0",
    ),
]
SCOPE_IDS = [
    "namespace-listed",
    "namespace-not-listed",
    "namespace-selector-matches",
    "namespace-selector-misses",
    "service-selector-matches",
    "service-selector-misses",
    "service-selector-expression-in",
    "every-criterion-must-hold",
]


@pytest.mark.parametrize(("scope", "req", "want"), SCOPE_CASES, ids=SCOPE_IDS)
def test_allocation_scope(scope: AllocationScope, req: ServiceRequest, want: str) -> None:
    assert ips(Allocator(scoped_cfg(scope)).allocate(req)) == (want,)


HTTP: dict[str, Any] = {"sharing_key": "k", "ports": ["TCP/80"]}
DNS: dict[str, Any] = {"sharing_key": "k", "ports": ["UDP/53"]}
FAIL_CASES = [
    Case(config(A), svc("s", pool="nope"), reason=AllocFailure.UNKNOWN_POOL, message="nope"),
    Case(
        config(pool("a", "192.0.2.0/30", scope=NS_SCOPE)),
        svc("s", ns="dev"),
        reason=AllocFailure.NO_POOL_MATCHES,
        message="scope admits",
    ),
    Case(
        config(pool("a", "192.0.2.0/30", scope=NS_SCOPE)),
        svc("s", ns="dev", pool="a"),
        reason=AllocFailure.NO_POOL_MATCHES,
        message="pool a's allocation scope",
    ),
    Case(config(A), svc("s", families=[6]), reason=AllocFailure.NO_POOL_MATCHES, message="IPv6"),
    Case(
        config(pool("a", "192.0.2.0/30", auto=False)), svc("s"), reason=AllocFailure.NO_POOL_MATCHES
    ),
    Case(
        config(A),
        svc("s"),
        before=[svc(f"t{i}") for i in range(4)],
        reason=AllocFailure.POOL_EXHAUSTED,
        message="pool a is full: 4/4 used",
    ),
    Case(
        config(DUAL),
        svc("s", families=[4, 6], family_policy=DUAL_REQUIRE),
        before=[svc(f"t{i}", families=[6]) for i in range(4)],
        reason=AllocFailure.POOL_EXHAUSTED,
        message="pool dual is full: 4/4 IPv6 used",
    ),
    Case(
        config(A),
        svc("s", requested_ips=["10.9.9.9"]),
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="10.9.9.9 is in no pool",
    ),
    Case(
        config(A, B),
        svc("s", pool="a", requested_ips=["198.51.100.1"]),
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="198.51.100.1 is in pool b, not in pool a",
    ),
    Case(
        config(A, V6),
        svc("s", requested_ips=["2001:db8::1"]),
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="2001:db8::1 is IPv6; the Service has IPv4 only",
    ),
    Case(
        config(pool("a", "192.0.2.0/30", scope=NS_SCOPE)),
        svc("s", ns="dev", requested_ips=["192.0.2.1"]),
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="does not admit",
    ),
    Case(
        config(A),
        svc("s", requested_ips=["192.0.2.0"]),
        before=[svc("t")],
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="192.0.2.0 is in use by ns/t",
    ),
    Case(
        config(pool("a", "192.0.2.0/24", avoid=True)),
        svc("s", requested_ips=["192.0.2.255"]),
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="in no pool",
    ),
    Case(
        config(DUAL),
        svc(
            "s",
            families=[4, 6],
            family_policy=DUAL_PREFER,
            requested_ips=["203.0.113.1", "203.0.113.2"],
        ),
        reason=AllocFailure.INVALID_ANNOTATION,
        message="two IPv4 addresses requested",
    ),
    Case(
        config(A, V6),
        svc("s", families=[4, 6], family_policy=DUAL_REQUIRE),
        reason=AllocFailure.FAMILY_UNAVAILABLE,
        message="holds both IPv4 and IPv6",
    ),
    Case(
        config(DUAL),
        svc("s", families=[4, 6], family_policy=DUAL_REQUIRE, requested_ips=["203.0.113.1"]),
        reason=AllocFailure.FAMILY_UNAVAILABLE,
        message="only IPv4 requested",
    ),
    Case(
        config(A, V6),
        svc(
            "s",
            families=[4, 6],
            family_policy=DUAL_PREFER,
            requested_ips=["192.0.2.1", "2001:db8::1"],
        ),
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="lie in different pools (a, v6)",
    ),
    Case(
        config(A),
        svc("s", requested_ips=["192.0.2.0"], sharing_key="other", ports=["UDP/53"]),
        before=[svc("t", **HTTP)],
        reason=AllocFailure.SHARING_CONFLICT,
        message="sharing key 'k' differs from 'other'",
    ),
    Case(
        config(A),
        svc("s", requested_ips=["192.0.2.0"], sharing_key="k", ports=["TCP/80"]),
        before=[svc("t", **HTTP)],
        reason=AllocFailure.SHARING_CONFLICT,
        message="port TCP/80 used by both",
    ),
    Case(
        config(A),
        svc(
            "s", requested_ips=["192.0.2.0"], **DNS, traffic_policy=LOCAL, selector=(("app", "x"),)
        ),
        before=[svc("t", **HTTP, traffic_policy=LOCAL, selector=(("app", "y"),))],
        reason=AllocFailure.SHARING_CONFLICT,
        message="backends differ",
    ),
    Case(
        config(A),
        svc("s", requested_ips=["192.0.2.0"], **DNS),
        before=[svc("t", ports=["TCP/80"])],
        reason=AllocFailure.REQUESTED_IP_UNAVAILABLE,
        message="in use by ns/t",
    ),
]
FAIL_IDS = [
    "pool-annotation-naming-no-pool",
    "no-pool-scope-admits-service",
    "named-pool-scope-excludes-service",
    "no-pool-of-the-family",
    "only-manual-pools",
    "pool-exhausted-with-numbers",
    "require-dual-pool-full-on-one-family",
    "requested-ip-outside-every-pool",
    "requested-ip-outside-named-pool",
    "requested-ip-of-a-family-the-service-lacks",
    "requested-ip-in-pool-whose-scope-excludes",
    "requested-ip-taken",
    "requested-buggy-ip-with-avoid-buggy",
    "two-requested-ips-of-one-family",
    "require-dual-without-dual-pool",
    "require-dual-with-one-requested-ip",
    "requested-ips-in-two-pools",
    "sharing-keys-differ",
    "sharing-port-collision",
    "sharing-local-backends-differ",
    "sharing-holder-without-key",
]


@pytest.mark.parametrize("case", FAIL_CASES, ids=FAIL_IDS)
def test_failure_reasons(case: Case) -> None:
    run(case)


SHARE_CASES = [
    Case(
        config(A),
        svc("s", requested_ips=["192.0.2.0"], **DNS),
        before=[svc("t", **HTTP)],
        want=("192.0.2.0",),
    ),
    Case(config(A), svc("s", **DNS), before=[svc("u"), svc("t", **HTTP)], want=("192.0.2.1",)),
    Case(
        config(A, B), svc("s", **DNS), before=[svc("t", pool="b", **HTTP)], want=("198.51.100.0",)
    ),
    Case(
        config(A),
        svc("s", sharing_key="k", ports=["TCP/80"]),
        before=[svc("t", **HTTP)],
        want=("192.0.2.1",),
    ),
    Case(
        config(A),
        svc("s", **DNS, traffic_policy=LOCAL, selector=(("app", "x"),)),
        before=[svc("t", **HTTP, traffic_policy=LOCAL, selector=(("app", "x"),))],
        want=("192.0.2.0",),
    ),
    Case(
        config(A),
        svc("s", **DNS, traffic_policy=LOCAL, selector=(("app", "x"),)),
        before=[svc("t", **HTTP, traffic_policy=LOCAL, selector=(("app", "y"),))],
        want=("192.0.2.1",),
    ),
]
SHARE_IDS = [
    "requested-ip-shared-with-same-key-disjoint-ports",
    "auto-assign-prefers-ip-shared-under-the-key",
    "auto-assign-prefers-shared-ip-over-earlier-pool",
    "auto-assign-skips-shared-ip-when-ports-collide",
    "local-policy-shares-with-identical-selector",
    "local-policy-different-selector-gets-own-ip",
]


@pytest.mark.parametrize("case", SHARE_CASES, ids=SHARE_IDS)
def test_sharing(case: Case) -> None:
    run(case)


DUAL_CASES = [
    Case(
        config(DUAL),
        svc("s", families=[4, 6], family_policy=DUAL_REQUIRE),
        want=("203.0.113.0", "2001:db8:1::"),
    ),
    Case(
        config(DUAL),
        svc("s", families=[6, 4], family_policy=DUAL_REQUIRE),
        want=("2001:db8:1::", "203.0.113.0"),
    ),
    Case(
        config(A, V6, DUAL),
        svc("s", families=[4, 6], family_policy=DUAL_PREFER),
        want=("203.0.113.0", "2001:db8:1::"),
    ),
    Case(config(A, V6), svc("s", families=[4, 6], family_policy=DUAL_PREFER), want=("192.0.2.0",)),
    Case(
        config(DUAL, A),
        svc("s", families=[4, 6], family_policy=DUAL_PREFER),
        before=[svc(f"t{i}", families=[6], pool="dual") for i in range(4)],
        want=("192.0.2.0",),
    ),
    Case(
        config(DUAL),
        svc(
            "s",
            families=[4, 6],
            family_policy=DUAL_REQUIRE,
            requested_ips=["2001:db8:1::2", "203.0.113.3"],
        ),
        want=("203.0.113.3", "2001:db8:1::2"),
    ),
    Case(config(DUAL), svc("s", families=[4, 6]), want=("203.0.113.0",)),
]
DUAL_IDS = [
    "require-dual-one-of-each-from-one-pool",
    "require-dual-primary-family-first",
    "prefer-dual-takes-dual-pool",
    "prefer-dual-falls-back-to-primary-family",
    "prefer-dual-falls-back-when-dual-pool-full-on-one-family",
    "require-dual-requested-ips",
    "single-stack-takes-only-primary",
]


@pytest.mark.parametrize("case", DUAL_CASES, ids=DUAL_IDS)
def test_dual_stack(case: Case) -> None:
    run(case)


def test_class_mismatch_is_not_ours_and_not_pending() -> None:
    alloc = Allocator(config(A), lb_class="lbctl.io/lb")
    fail = failed(alloc.allocate(svc("s")))
    assert fail.reason is AllocFailure.CLASS_MISMATCH
    assert alloc.pending() == []
    assert ips(alloc.allocate(svc("t", lb_class="lbctl.io/lb"))) == ("192.0.2.0",)


def test_usage_counts_a_shared_ip_once() -> None:
    alloc = Allocator(config(A))
    alloc.allocate(svc("t", **HTTP))
    alloc.allocate(svc("s", **DNS))
    assert alloc.usage("a", Family.V4) == (1, 4)
    assert alloc.holders(ip("192.0.2.0")) == (key("s"), key("t"))
    assert alloc.usage("a", Family.V6) == (0, 0)
