"""FreeSpace (lbctl.core.alloc_space) against a brute-force set model, and its size-independence."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core import alloc_space
from lbctl.core.alloc_space import FreeSpace

BASE = int(ipaddress.IPv4Address("10.0.0.0"))


def model_free(ranges: list[tuple[int, int]], avoid_buggy: bool) -> set[int]:
    return {
        n
        for a, b in ranges
        for n in range(a, b + 1)
        if not (avoid_buggy and (n & 0xFF) in (0, 0xFF))
    }


@st.composite
def ranges_st(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Up to three disjoint ranges within 10.0.0.0-10.0.3.255 (block edges included)."""
    cuts = sorted(draw(st.sets(st.integers(0, 1023), min_size=2, max_size=6)))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    return [(BASE + a, BASE + b) for a, b in pairs]


@settings(max_examples=300, deadline=None)
@given(
    ranges=ranges_st(),
    avoid=st.booleans(),
    ops=st.lists(st.tuples(st.sampled_from(["low", "take", "give"]), st.integers(0, 1023))),
    load=st.sampled_from([1, 2, 3, 128]),
)
def test_free_space_matches_a_set_of_free_addresses(
    ranges: list[tuple[int, int]], avoid: bool, ops: list[tuple[str, int]], load: int
) -> None:
    saved, alloc_space._LOAD = alloc_space._LOAD, load  # tiny chunks exercise every boundary
    try:
        check_against_model(ranges, avoid, ops)
    finally:
        alloc_space._LOAD = saved


def check_against_model(
    ranges: list[tuple[int, int]], avoid: bool, ops: list[tuple[str, int]]
) -> None:
    space = FreeSpace(ranges, avoid)
    free = model_free(ranges, avoid)
    used: set[int] = set()
    assert space.size == len(free)
    for op, off in ops:
        n = BASE + off
        if op == "low":
            got = space.take_lowest()
            assert got == (min(free) if free else None)
            if got is not None:
                free.remove(got)
                used.add(got)
        elif op == "take":
            assert space.take(n) == (n in free)
            if n in free:
                free.remove(n)
                used.add(n)
        elif n in used:
            space.give(n)
            used.remove(n)
            free.add(n)
        assert space.lowest() == (min(free) if free else None)
        assert space.used == len(used)
        assert space.is_free(n) == (n in free)
    # Fully merged: the intervals are exactly the maximal runs of the model (buggy gaps bridged).
    for lo, hi in space.free_intervals():
        assert lo in free
        assert hi in free


@pytest.mark.parametrize(
    ("first", "last", "avoid", "size"),
    [
        pytest.param("10.0.0.0", "10.0.0.255", False, 256, id="v4-24"),
        pytest.param("10.0.0.0", "10.0.0.255", True, 254, id="v4-24-avoid-buggy"),
        pytest.param("10.0.0.0", "10.255.255.255", True, 254 * 65536, id="v4-8-avoid-buggy"),
        pytest.param("10.0.0.250", "10.0.1.5", True, 10, id="v4-crossing-block-avoid-buggy"),
        pytest.param("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", True, 2**64, id="v6-64"),
    ],
)
def test_size_is_computed_without_enumerating(
    first: str, last: str, avoid: bool, size: int
) -> None:
    a, b = int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    avoid_v4 = avoid and ":" not in first
    space = FreeSpace([(a, b)], avoid_v4)
    assert space.size == size
    assert space.intervals == 1


def test_give_of_a_free_address_is_refused() -> None:
    space = FreeSpace([(BASE, BASE + 3)])
    with pytest.raises(ValueError, match="already free"):
        space.give(BASE + 1)


def test_freed_neighbours_merge_across_skipped_buggy_addresses() -> None:
    space = FreeSpace([(BASE, BASE + 511)], avoid_buggy=True)
    taken = [space.take_lowest() for _ in range(254 * 2)]
    assert space.lowest() is None
    for n in taken:
        assert n is not None
        space.give(n)
    assert space.intervals == 1
    assert space.free_intervals() == [(BASE + 1, BASE + 510)]
