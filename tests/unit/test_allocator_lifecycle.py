"""Allocator over time: idempotence, changed requests, release, restore, config changes."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from test_allocator_helpers import config, failed, fill, ip, ips, key, pool, svc

from lbctl.core.allocator import Allocator, Assignment
from lbctl.core.model import Family, IPFamilyPolicy, PoolName
from lbctl.core.reasons import AllocFailure, AllocSuccess

A = pool("a", "192.0.2.0/30")
B = pool("b", "198.51.100.0/30")


def test_allocate_is_idempotent_for_an_unchanged_request() -> None:
    alloc = Allocator(config(A))
    first = alloc.allocate(svc("s", created="1"))
    assert alloc.allocate(svc("s", created="1")) is first
    assert alloc.usage("a", Family.V4) == (1, 4)


@pytest.mark.parametrize(
    ("change", "want"),
    [
        pytest.param({"labels": (("x", "y"),)}, "192.0.2.1", id="label-change-keeps-ip"),
        pytest.param(
            {"requested_ips": ["192.0.2.1"]}, "192.0.2.1", id="request-of-held-ip-keeps-it"
        ),
        pytest.param({"pool": "a"}, "192.0.2.1", id="naming-its-own-pool-keeps-ip"),
        pytest.param({"requested_ips": ["192.0.2.3"]}, "192.0.2.3", id="request-of-other-ip-moves"),
        pytest.param({"pool": "b"}, "198.51.100.0", id="naming-another-pool-moves"),
    ],
)
def test_changed_request(change: dict[str, Any], want: str) -> None:
    alloc = Allocator(config(A, B))
    alloc.allocate(svc("first"))
    assert ips(alloc.allocate(svc("s"))) == ("192.0.2.1",)
    assert ips(alloc.allocate(svc("s", **change))) == (want,)
    held = 1 + (want.startswith("192.0.2."))
    assert alloc.usage("a", Family.V4)[0] == held


def test_changed_request_that_moves_frees_its_ip_for_the_oldest_pending() -> None:
    alloc = Allocator(config(A, B))
    fill(alloc, 8)  # a and b full
    waiting = failed(alloc.allocate(svc("w", created="5")))
    assert waiting.reason is AllocFailure.POOL_EXHAUSTED
    assert ips(alloc.allocate(svc("fill0", created="0-00000", requested_ips=["192.0.2.0"])))
    moved = failed(alloc.allocate(svc("fill0", created="0-00000", requested_ips=["10.0.0.1"])))
    assert moved.reason is AllocFailure.REQUESTED_IP_UNAVAILABLE
    assert [(w.key, ips(w)) for w in alloc.drain_woken()] == [(key("w"), ("192.0.2.0",))]


def test_changed_sharing_ports_let_a_pending_sharer_in() -> None:
    alloc = Allocator(config(A))
    alloc.allocate(svc("t", sharing_key="k", ports=["TCP/80"]))
    want = svc("s", sharing_key="k", ports=["TCP/80"], requested_ips=["192.0.2.0"])
    assert failed(alloc.allocate(want)).reason is AllocFailure.SHARING_CONFLICT
    assert ips(alloc.allocate(svc("t", sharing_key="k", ports=["TCP/81"]))) == ("192.0.2.0",)
    assert [w.key for w in alloc.drain_woken()] == [key("s")]
    assert alloc.holders(ip("192.0.2.0")) == (key("s"), key("t"))


def test_freed_ip_goes_to_oldest_pending_by_creation_then_key() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 4)
    for name, created in [("late", "2024-02"), ("b", "2024-01"), ("a", "2024-01")]:
        alloc.allocate(svc(name, created=created))
    assert [f.key for f in alloc.pending()] == [key("a"), key("b"), key("late")]
    woken = alloc.release(key("fill2"))
    assert [(w.key, ips(w)) for w in woken] == [(key("a"), ("192.0.2.2",))]
    assert alloc.stats.reexamined == 1
    assert [f.key for f in alloc.pending()] == [key("b"), key("late")]


def test_release_never_reexamines_services_waiting_on_other_pools() -> None:
    alloc = Allocator(config(A, pool("b", "198.51.100.0/30", auto=False)))
    fill(alloc, 4)
    for i in range(4):
        alloc.allocate(svc(f"b{i}", pool="b", created="0"))
    for i in range(50):
        alloc.allocate(svc(f"wb{i}", pool="b", created="1"))
    alloc.allocate(svc("wa", created="2"))
    woken = alloc.release(key("fill1"))
    assert [w.key for w in woken] == [key("wa")]
    assert alloc.stats.reexamined == 1
    assert alloc.release(key("fill3")) == []
    assert alloc.stats.reexamined == 1


def test_release_of_unknown_or_pending_service_is_harmless() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 4)
    alloc.allocate(svc("w"))
    assert alloc.release(key("ghost")) == []
    assert alloc.release(key("w")) == []
    assert alloc.pending() == []


def test_restore_in_any_order_gives_the_same_state() -> None:
    cfg = config(A, pool("dual", "203.0.113.0/30", "2001:db8::/126"))
    held = [
        (svc("s1"), ["192.0.2.3"]),
        (svc("s2", sharing_key="k", ports=["TCP/80"]), ["203.0.113.1"]),
        (svc("s3", sharing_key="k", ports=["TCP/81"]), ["203.0.113.1"]),
        (
            svc("s4", families=[6, 4], family_policy=IPFamilyPolicy.REQUIRE_DUAL_STACK),
            ["203.0.113.2", "2001:db8::9"],
        ),
    ]
    states = set()
    for order in itertools.permutations(held):
        alloc = Allocator(cfg)
        for req, addrs in order:
            alloc.restore(req, [ip(a) for a in addrs])
        states.add(
            (
                tuple(alloc.assignments()),
                alloc.usage("a", Family.V4),
                alloc.usage("dual", Family.V4),
            )
        )
    assert len(states) == 1
    ((assignments, *_),) = states
    assert [str(x) for x in assignments[3].ips] == ["203.0.113.2", "2001:db8::9"]  # as listed


def test_restored_ip_is_never_changed_even_if_not_chosen_now() -> None:
    alloc = Allocator(config(A))
    restored = alloc.restore(svc("s"), [ip("192.0.2.2")])
    assert restored.reason is AllocSuccess.RESTORED
    assert alloc.allocate(svc("s")) is restored
    assert ips(alloc.allocate(svc("t"))) == ("192.0.2.0",)


def test_restored_ip_in_no_pool_is_kept_reported_and_given_to_no_one() -> None:
    alloc = Allocator(config(A))
    restored = alloc.restore(svc("s"), [ip("10.1.2.3")])
    assert restored.pool is None
    assert restored.orphaned == (ip("10.1.2.3"),)
    assert [(f.key, f.reason) for f in alloc.anomalies()] == [
        (key("s"), AllocFailure.CONFIG_INVALID)
    ]
    assert alloc.allocate(svc("s")) is restored
    # A later config that covers it adopts it: it must not be handed to anyone else.
    change = alloc.update_config(config(A, pool("c", "10.1.2.0/30")))
    assert change.accepted
    assert ips(alloc.allocate(svc("t", pool="c"))) == ("10.1.2.0",)
    assert failed(alloc.allocate(svc("u", requested_ips=["10.1.2.3"]))).reason is (
        AllocFailure.REQUESTED_IP_UNAVAILABLE
    )
    assert alloc.assignment(key("s")) == Assignment(
        key("s"), (ip("10.1.2.3"),), PoolName("c"), AllocSuccess.RESTORED
    )


def test_restored_incompatible_sharers_are_kept_and_reported() -> None:
    alloc = Allocator(config(A))
    alloc.restore(svc("s"), [ip("192.0.2.1")])
    alloc.restore(svc("t"), [ip("192.0.2.1")])
    assert alloc.holders(ip("192.0.2.1")) == (key("s"), key("t"))
    assert [(f.key, f.reason) for f in alloc.anomalies()] == [
        (key("s"), AllocFailure.SHARING_CONFLICT),
        (key("t"), AllocFailure.SHARING_CONFLICT),
    ]
    assert alloc.usage("a", Family.V4) == (1, 4)


def test_restore_without_addresses_is_refused() -> None:
    with pytest.raises(ValueError, match="no addresses"):
        Allocator(config(A)).restore(svc("s"), [])


def test_shrinking_config_is_rejected_naming_the_services() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 3)
    change = alloc.update_config(config(pool("a", "192.0.2.0/31")))
    assert not change.accepted
    assert change.reason is AllocFailure.CONFIG_INVALID
    assert change.blocked == (key("fill2"),)
    assert "ns/fill2 (192.0.2.2)" in change.message
    assert alloc.usage("a", Family.V4) == (3, 4)
    assert ips(alloc.allocate(svc("next"))) == ("192.0.2.3",)  # the old config is still in force


def test_avoid_buggy_turned_on_under_a_held_dot_zero_is_rejected() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 1)
    change = alloc.update_config(config(pool("a", "192.0.2.0/30", avoid=True)))
    assert change.blocked == (key("fill0"),)


def test_moving_an_ip_to_another_pool_is_accepted_and_reported() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 2)
    change = alloc.update_config(config(pool("a", "192.0.2.0/31"), pool("a2", "192.0.2.2/31")))
    assert change.accepted
    assert change.repooled == ()
    change = alloc.update_config(config(pool("renamed", "192.0.2.0/30")))
    assert [(a.key, a.pool) for a in change.repooled] == [
        (key("fill0"), "renamed"),
        (key("fill1"), "renamed"),
    ]
    assert alloc.usage("renamed", Family.V4) == (2, 4)


def test_growing_a_pool_satisfies_pending_oldest_first() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 4)
    for i in range(3):
        alloc.allocate(svc(f"w{i}", created=f"1-{i}"))
    change = alloc.update_config(config(pool("a", "192.0.2.0/29")))
    assert [(a.key, ips(a)) for a in change.woken] == [
        (key("w0"), ("192.0.2.4",)),
        (key("w1"), ("192.0.2.5",)),
        (key("w2"), ("192.0.2.6",)),
    ]
    assert alloc.pending() == []


def test_config_adding_a_named_pool_satisfies_unknown_pool_requests() -> None:
    alloc = Allocator(config(A))
    assert failed(alloc.allocate(svc("s", pool="b"))).reason is AllocFailure.UNKNOWN_POOL
    assert [ips(a) for a in alloc.update_config(config(A, B)).woken] == [("198.51.100.0",)]


def test_allow_renumber_moves_displaced_services_with_a_reason() -> None:
    alloc = Allocator(config(A, B))
    fill(alloc, 6)  # a full, b half
    change = alloc.update_config(config(pool("a", "192.0.2.0/31"), B, allow_renumber=True))
    assert change.accepted
    moved = [(r.key, r.reason, ips(r)) for r in change.renumbered]
    assert moved == [
        (key("fill2"), AllocSuccess.RENUMBERED, ("198.51.100.2",)),
        (key("fill3"), AllocSuccess.RENUMBERED, ("198.51.100.3",)),
    ]
    assert alloc.assignment(key("fill2")) == change.renumbered[0]


def test_allow_renumber_without_room_leaves_a_failure_pending() -> None:
    alloc = Allocator(config(A))
    fill(alloc, 4)
    change = alloc.update_config(config(pool("a", "192.0.2.0/31"), allow_renumber=True))
    results = [(r.key, r.reason) for r in change.renumbered]
    assert results == [
        (key("fill2"), AllocFailure.POOL_EXHAUSTED),
        (key("fill3"), AllocFailure.POOL_EXHAUSTED),
    ]
    assert [f.key for f in alloc.pending()] == [key("fill2"), key("fill3")]


@pytest.mark.parametrize(
    ("cidr", "family"),
    [
        pytest.param("10.0.0.0/8", Family.V4, id="ipv4-slash-8"),
        pytest.param("2001:db8::/64", Family.V6, id="ipv6-slash-64"),
        pytest.param("2001:db8::/32", Family.V6, id="ipv6-slash-32"),
    ],
)
def test_huge_pools_work_without_enumerating(cidr: str, family: Family) -> None:
    alloc = Allocator(config(pool("big", cidr)))
    fam = [int(family)]
    for i in range(1000):
        alloc.allocate(svc(f"s{i}", families=fam))
    for i in range(0, 1000, 2):
        alloc.release(key(f"s{i}"))
    got = ips(alloc.allocate(svc("again", families=fam)))
    assert got == (str(ip(cidr.split("/", maxsplit=1)[0])),)
    used, size = alloc.usage("big", family)
    assert used == 501
    assert size == 2 ** (family.max_prefix - int(cidr.split("/")[1]))
