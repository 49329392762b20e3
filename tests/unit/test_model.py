"""The model's own arithmetic: range sizes without enumeration, selectors, redaction."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.model import (
    AddressRange,
    Community,
    CommunityKind,
    Family,
    LabelSelector,
    Pool,
    PoolName,
    Secret,
    SelectorOperator,
    SelectorRequirement,
    any_selector_matches,
    is_buggy,
    range_usable_size,
)


def v4(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def rng(first: str, last: str) -> AddressRange:
    return AddressRange(ipaddress.ip_address(first), ipaddress.ip_address(last), f"{first}-{last}")


@pytest.mark.parametrize(
    ("first", "last", "avoid", "expected"),
    [
        ("192.0.2.0", "192.0.2.255", False, 256),
        ("192.0.2.0", "192.0.2.255", True, 254),
        ("192.0.2.255", "192.0.3.0", True, 0),
        ("192.0.2.1", "192.0.2.254", True, 254),
        ("10.0.0.0", "10.255.255.255", True, 2**24 - 2 * 2**16),
        ("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", True, 2**64),
    ],
    ids=["v4-24", "v4-24-buggy", "v4-two-buggy", "v4-no-buggy", "v4-8-buggy", "v6-64-never-buggy"],
)
def test_usable_size_counts_without_enumerating(
    first: str, last: str, avoid: bool, expected: int
) -> None:
    assert range_usable_size(rng(first, last), avoid) == expected


@given(st.integers(0, 2**32 - 1), st.integers(0, 600))
def test_usable_size_matches_enumeration(start: int, length: int) -> None:
    end = min(start + length, 2**32 - 1)
    r = AddressRange(ipaddress.IPv4Address(start), ipaddress.IPv4Address(end))
    brute = sum(1 for n in range(start, end + 1) if not is_buggy(ipaddress.IPv4Address(n)))
    assert range_usable_size(r, True) == brute


def test_range_rejects_start_after_end_and_mixed_families() -> None:
    with pytest.raises(ValueError, match="start after end"):
        rng("192.0.2.9", "192.0.2.3")
    with pytest.raises(ValueError, match="mixes IP families"):
        AddressRange(v4("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1"))


def test_ranges_overlap_only_within_one_family() -> None:
    assert rng("192.0.2.0", "192.0.2.10").overlaps(rng("192.0.2.10", "192.0.2.20"))
    assert not rng("192.0.2.0", "192.0.2.9").overlaps(rng("192.0.2.10", "192.0.2.20"))
    assert not rng("0.0.0.0", "0.0.0.9").overlaps(rng("::", "::9"))


def test_pool_contains_respects_avoid_buggy_ips() -> None:
    pool = Pool(PoolName("p"), (rng("192.0.2.0", "192.0.2.255"),), avoid_buggy_ips=True)
    assert pool.contains(v4("192.0.2.1"))
    assert not pool.contains(v4("192.0.2.0"))
    assert not pool.contains(v4("192.0.2.255"))
    assert not pool.contains(v4("198.51.100.1"))
    assert pool.size(Family.V4) == 254
    assert pool.size(Family.V6) == 0


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (LabelSelector(), {}, True),
        (LabelSelector(match_labels=(("zone", "a"),)), {"zone": "a"}, True),
        (LabelSelector(match_labels=(("zone", "a"),)), {"zone": "b"}, False),
        (
            LabelSelector(
                match_expressions=(SelectorRequirement("zone", SelectorOperator.IN, ("a", "b")),)
            ),
            {"zone": "b"},
            True,
        ),
        (
            LabelSelector(
                match_expressions=(SelectorRequirement("zone", SelectorOperator.NOT_IN, ("a",)),)
            ),
            {},
            True,
        ),
        (
            LabelSelector(match_expressions=(SelectorRequirement("x", SelectorOperator.EXISTS),)),
            {"y": ""},
            False,
        ),
        (
            LabelSelector(
                match_expressions=(SelectorRequirement("x", SelectorOperator.DOES_NOT_EXIST),)
            ),
            {"y": ""},
            True,
        ),
    ],
    ids=["empty-matches-all", "labels-eq", "labels-ne", "in", "notin-absent", "exists", "dne"],
)
def test_label_selector_semantics(
    selector: LabelSelector, labels: dict[str, str], expected: bool
) -> None:
    assert selector.matches(labels) is expected


def test_selector_list_is_an_or_and_empty_list_matches_all() -> None:
    a = LabelSelector(match_labels=(("zone", "a"),))
    b = LabelSelector(match_labels=(("zone", "b"),))
    assert any_selector_matches((), {"zone": "c"})
    assert any_selector_matches((a, b), {"zone": "b"})
    assert not any_selector_matches((a, b), {"zone": "c"})


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in f"{secret} {secret!r} {secret!s} {[secret]} {secret:>20}"
    assert secret.reveal() == "hunter2"


def test_community_text_forms() -> None:
    assert str(Community(CommunityKind.STANDARD, (65535, 65281))) == "65535:65281"
    assert str(Community(CommunityKind.LARGE, (64512, 1, 2))) == "large:64512:1:2"
