"""Rendezvous ranking: the exact bytes and order every speaker computes, and its invariants."""

from __future__ import annotations

import hashlib
import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.election import MONITOR_COUNT, monitors, outranks, owner, rank, score
from lbctl.core.model import IPAddress, NodeName

IP = ipaddress.ip_address
NODES = tuple(NodeName(f"node-{c}") for c in "abcde")

# Golden orders, checked by hand with `printf 'node-a#192.0.2.10' | sha256sum` for each node and
# sorting the digests ascending: a change here changes which node owns every IP in a cluster.
GOLDEN = [
    pytest.param("192.0.2.10", ("node-d", "node-c", "node-b", "node-a", "node-e"), id="ipv4"),
    pytest.param("192.0.2.11", ("node-d", "node-a", "node-e", "node-c", "node-b"), id="next-ipv4"),
    pytest.param("2001:db8::10", ("node-b", "node-a", "node-e", "node-c", "node-d"), id="ipv6"),
]


@pytest.mark.parametrize(("ip", "order"), GOLDEN)
def test_rank_order_is_pinned(ip: str, order: tuple[str, ...]) -> None:
    assert rank(NODES, IP(ip)) == order


def test_score_is_sha256_of_node_hash_sign_ip() -> None:
    digest = "d4b84135501a6622f43f01422f65d768d1a4637914be8add4e31f107336b8068"
    assert score("node-a", IP("192.0.2.10")).hex() == digest
    assert score("node-a", IP("192.0.2.10")) == hashlib.sha256(b"node-a#192.0.2.10").digest()


def test_score_uses_the_compressed_ipv6_text() -> None:
    written_long = IP("2001:0DB8:0000:0000:0000:0000:0000:0010")
    assert score("n", written_long) == hashlib.sha256(b"n#2001:db8::10").digest()


def test_rank_is_lowest_digest_first_like_metallb() -> None:
    ip = IP("198.51.100.7")
    digests = [hashlib.sha256(f"{n}#198.51.100.7".encode()).digest() for n in rank(NODES, ip)]
    assert digests == sorted(digests)


def test_rank_drops_duplicate_names() -> None:
    ip = IP("192.0.2.10")
    assert rank([*NODES, NODES[0]], ip) == rank(NODES, ip)


OWNERS = [
    pytest.param((), None, (), id="nobody-eligible-no-owner-no-monitors"),
    pytest.param(("a",), "a", (), id="single-node-owns-unmonitored"),
    pytest.param(("a", "b"), "a", ("b",), id="two-nodes-one-monitor"),
    pytest.param(("a", "b", "c"), "a", ("b", "c"), id="ranks-2-and-3-monitor"),
    pytest.param(("a", "b", "c", "d", "e"), "a", ("b", "c"), id="rank-4-and-beyond-do-not"),
]


@pytest.mark.parametrize(("ranking", "first", "watchers"), OWNERS)
def test_owner_is_rank_1_and_monitors_ranks_2_and_3(
    ranking: tuple[NodeName, ...], first: str | None, watchers: tuple[str, ...]
) -> None:
    assert owner(ranking) == first
    assert monitors(ranking) == watchers
    assert len(monitors(ranking)) <= MONITOR_COUNT


# --- invariants ----------------------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
node_sets = st.sets(names.map(NodeName), max_size=12)
ips: st.SearchStrategy[IPAddress] = st.ip_addresses()


@given(node_sets, ips)
def test_ranking_is_a_permutation_of_the_eligible_set(nodes: set[NodeName], ip: IPAddress) -> None:
    ranking = rank(nodes, ip)
    assert len(ranking) == len(nodes)
    assert set(ranking) == nodes


@given(node_sets, ips, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(
    nodes: set[NodeName], ip: IPAddress, rnd: random.Random
) -> None:
    listed = sorted(nodes)
    rnd.shuffle(listed)
    assert rank(listed, ip) == rank(sorted(nodes), ip)


@given(node_sets.filter(bool), ips, st.data())
def test_removing_a_node_never_reorders_the_others(
    nodes: set[NodeName], ip: IPAddress, data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(nodes)))
    before = rank(nodes, ip)
    assert rank(nodes - {gone}, ip) == tuple(n for n in before if n != gone)


@given(node_sets.filter(bool), ips)
def test_when_the_owner_leaves_rank_2_takes_over(nodes: set[NodeName], ip: IPAddress) -> None:
    before = rank(nodes, ip)
    after = rank(nodes - {before[0]}, ip)
    assert owner(after) == (before[1] if len(before) > 1 else None)


@given(node_sets, names.map(NodeName), names.map(NodeName), ips)
def test_outranks_agrees_with_the_ranking(
    nodes: set[NodeName], a: NodeName, b: NodeName, ip: IPAddress
) -> None:
    ranking = rank(nodes | {a, b}, ip)
    assert outranks(a, b, ip) == (ranking.index(a) < ranking.index(b))
