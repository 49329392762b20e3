"""Hypothesis state machine over the allocator: >= 10,000 random operations, invariants every step.

Operations: create / change a Service (allocate), delete (release), change pools (incl. shrinking
and allow_renumber), restore from a snapshot into a fresh allocator (which then carries on).
Invariants: no address shared against the sharing rules, no address outside the pools of the
config in force, usage counts agree with holdings, restore reproduces the state, and replaying the
same operations into a second allocator gives the same results (determinism).
"""

from __future__ import annotations

import ipaddress
import os
import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from lbctl.core.alloc_choose import sharing_problem
from lbctl.core.allocator import Allocator, Assignment, Failure
from lbctl.core.model import (
    AddressRange,
    AllocationScope,
    Config,
    Family,
    IPAddress,
    IPFamilyPolicy,
    LabelSelector,
    Pool,
    PoolName,
    ServiceKey,
    ServicePort,
    ServiceRequest,
    TrafficPolicy,
)

# Small universes so that exhaustion and sharing happen often; v4 crosses a .255/.0 boundary.
V4_BASE = int(ipaddress.IPv4Address("192.0.2.250"))
V4_COUNT = 14
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
V6_COUNT = 6
POOL_NAMES = ("p0", "p1", "p2")
KEYS = tuple(ServiceKey(f"{ns}/s{i}") for ns in ("a", "b") for i in range(6))
PORTS = (ServicePort("TCP", 80), ServicePort("TCP", 443), ServicePort("UDP", 53))
TOTAL_STEPS = {"n": 0}


def v4(off: int) -> IPAddress:
    return ipaddress.IPv4Address(V4_BASE + off)


def v6(off: int) -> IPAddress:
    return ipaddress.IPv6Address(V6_BASE + off)


@st.composite
def intervals(draw: st.DrawFn, count: int) -> list[tuple[int, int]]:
    cuts = sorted(draw(st.sets(st.integers(0, count - 1), max_size=6)))
    return [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]


@st.composite
def configs(draw: st.DrawFn) -> Config:
    ranges: dict[str, list[AddressRange]] = {n: [] for n in POOL_NAMES}
    for make, count in ((v4, V4_COUNT), (v6, V6_COUNT)):
        for a, b in draw(intervals(count)):
            owner = draw(st.sampled_from(POOL_NAMES))
            ranges[owner].append(AddressRange(make(a), make(b)))
    scopes = st.one_of(
        st.none(),
        st.builds(AllocationScope, priority=st.integers(0, 2), namespaces=st.just(("a",))),
        st.builds(
            AllocationScope,
            service_selectors=st.just((LabelSelector(match_labels=(("tier", "edge"),)),)),
        ),
    )
    pools = tuple(
        Pool(
            PoolName(name),
            tuple(rs),
            auto_assign=draw(st.sampled_from([True, True, True, False])),
            avoid_buggy_ips=draw(st.booleans()),
            scope=draw(scopes),
        )
        for name, rs in ranges.items()
        if rs
    )
    return Config(pools=pools, allow_renumber=draw(st.booleans()))


@st.composite
def requests(draw: st.DrawFn) -> ServiceRequest:
    families = draw(
        st.sampled_from(
            [(Family.V4,), (Family.V6,), (Family.V4, Family.V6), (Family.V6, Family.V4)]
        )
    )
    policy = draw(st.sampled_from(list(IPFamilyPolicy)))
    wanted: tuple[IPAddress, ...] = ()
    if draw(st.integers(0, 3)) == 0:
        wanted = tuple(
            draw(
                st.lists(
                    st.one_of(
                        st.integers(0, V4_COUNT - 1).map(v4), st.integers(0, V6_COUNT - 1).map(v6)
                    ),
                    min_size=1,
                    max_size=2,
                )
            )
        )
    local = draw(st.booleans())
    return ServiceRequest(
        key=draw(st.sampled_from(KEYS)),
        families=families,
        family_policy=policy,
        requested_ips=wanted,
        pool=draw(
            st.one_of(st.none(), st.none(), st.sampled_from((*POOL_NAMES, "nope")).map(PoolName))
        ),
        sharing_key=draw(st.sampled_from([None, "k1", "k1", "k2"])),
        ports=tuple(draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))),
        traffic_policy=TrafficPolicy.LOCAL if local else TrafficPolicy.CLUSTER,
        selector=draw(st.sampled_from([(), (("app", "x"),)])),
        labels=draw(st.sampled_from([(), (("tier", "edge"),)])),
        created=draw(st.sampled_from(["t0", "t1", "t2"])),
    )


def view(alloc: Allocator) -> tuple[Any, ...]:
    """What must match between two allocators in the same state."""
    assigned = tuple((a.key, a.ips, a.pool) for a in alloc.assignments())
    usage = tuple(alloc.usage(p.name, f) for p in alloc.config.pools for f in Family)
    return assigned, usage, tuple(f.key for f in alloc.pending())


def restore_into_fresh(alloc: Allocator, seed: int) -> Allocator:
    fresh = Allocator(alloc.config)
    items = list(alloc.snapshot().values())
    random.Random(seed).shuffle(items)
    for req, held in items:
        fresh.restore(req, held)
    for req in alloc.pending_requests():
        fresh.allocate(req)
    return fresh


def apply(alloc: Allocator, op: tuple[Any, ...]) -> tuple[Allocator, object]:
    match op:
        case ("allocate", req):
            result = alloc.allocate(req)
            for woken in alloc.drain_woken():  # others a changed request made room for
                assert alloc.assignment(woken.key) == woken
            return alloc, result
        case ("release", key):
            return alloc, alloc.release(key)
        case ("config", cfg):
            return alloc, alloc.update_config(cfg)
        case ("restore", seed):
            return restore_into_fresh(alloc, seed), None
    raise AssertionError(op)


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.first_config = Config(
            pools=(
                Pool(PoolName("p0"), (AddressRange(v4(0), v4(7)), AddressRange(v6(0), v6(2)))),
                Pool(PoolName("p1"), (AddressRange(v4(8), v4(11)),), avoid_buggy_ips=True),
            )
        )
        self.alloc = Allocator(self.first_config)
        self.log: list[tuple[tuple[Any, ...], object]] = []

    def _do(self, op: tuple[Any, ...]) -> object:
        TOTAL_STEPS["n"] += 1
        self.alloc, result = apply(self.alloc, op)
        self.log.append((op, result))
        return result

    @rule(req=requests())
    def allocate(self, req: ServiceRequest) -> None:
        result = self._do(("allocate", req))
        assert isinstance(result, Assignment | Failure)
        if isinstance(result, Failure):
            assert result.message

    @rule(req=requests(), port=st.sampled_from(PORTS), pick=st.integers(0, 2))
    def allocate_sharer(self, req: ServiceRequest, port: ServicePort, pick: int) -> None:
        """A Service with key k1 asking for an address someone already holds: sharing, often."""
        held = sorted({ip for a in self.alloc.assignments() for ip in a.ips}, key=str)
        wanted = (held[pick % len(held)],) if held and pick else ()
        self._do(("allocate", replace(req, sharing_key="k1", ports=(port,), requested_ips=wanted)))

    @rule(req=requests())
    def allocate_plain(self, req: ServiceRequest) -> None:
        """The common case: single-stack, no request: fills pools, so exhaustion and waking."""
        plain = replace(req, requested_ips=(), pool=None, family_policy=IPFamilyPolicy.SINGLE_STACK)
        self._do(("allocate", plain))

    @rule(key=st.sampled_from(KEYS))
    def release(self, key: ServiceKey) -> None:
        self._do(("release", key))
        assert self.alloc.assignment(key) is None
        assert key not in {f.key for f in self.alloc.pending()}

    @rule(cfg=configs())
    def change_pools(self, cfg: Config) -> None:
        before = view(self.alloc)
        change = self._do(("config", cfg))
        if not change.accepted:  # type: ignore[attr-defined]
            assert change.blocked  # type: ignore[attr-defined]
            assert view(self.alloc) == before
        else:
            assert self.alloc.config is cfg

    @rule(seed=st.integers(0, 2**16))
    def restore(self, seed: int) -> None:
        before = view(self.alloc)
        self._do(("restore", seed))
        assert view(self.alloc) == before

    @invariant()
    def sharing_rules_hold(self) -> None:
        snap = self.alloc.snapshot()
        seen: dict[IPAddress, list[ServiceKey]] = {}
        for key, (_, held) in snap.items():
            for ip in held:
                seen.setdefault(ip, []).append(key)
        for ip, keys in seen.items():
            assert tuple(sorted(keys)) == self.alloc.holders(ip)
            for i, k1 in enumerate(keys):
                for k2 in keys[i + 1 :]:
                    r1, r2 = snap[k1][0], snap[k2][0]
                    assert r1.sharing_key
                    assert sharing_problem(r1, r2) is None, (ip, k1, k2)

    @invariant()
    def addresses_lie_in_pools_of_the_config_in_force(self) -> None:
        pools = self.alloc.config.pools
        held: dict[tuple[str, Family], set[IPAddress]] = {}
        for a in self.alloc.assignments():
            assert a.orphaned == ()
            assert len({ip.version for ip in a.ips}) == len(a.ips)
            for ip in a.ips:
                owner = [p for p in pools if p.contains(ip)]
                assert len(owner) == 1, (a, ip)
                held.setdefault((owner[0].name, Family(ip.version)), set()).add(ip)
            first = self.alloc.config.pool(a.pool or "")
            assert first is not None
            assert first.contains(a.ips[0])
        for p in pools:
            for fam in Family:
                used, size = self.alloc.usage(p.name, fam)
                assert used == len(held.get((p.name, fam), ()))
                assert size == p.size(fam)

    def teardown(self) -> None:
        # Determinism: the same operations into a second allocator give the same results.
        twin = Allocator(self.first_config)
        for op, result in self.log:
            twin, again = apply(twin, op)
            assert again == result, op
        assert view(twin) == view(self.alloc)


def test_allocator_state_machine() -> None:
    TOTAL_STEPS["n"] = 0
    run_state_machine_as_test(
        AllocatorMachine,
        settings=settings(
            max_examples=int(os.environ.get("ALLOC_EXAMPLES", "160")),
            stateful_step_count=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    assert TOTAL_STEPS["n"] >= 10_000, TOTAL_STEPS["n"]
