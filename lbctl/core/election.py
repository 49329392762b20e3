"""Rendezvous ranking of the nodes that may announce an IP; for the L2 planner and the speaker.

Every speaker computes the same order alone, from the same bytes, so ownership needs no messages
(habit 6). A node's score for an IP is

    sha256((node + "#" + str(ip)).encode("utf-8")).digest()

where `node` is the Node's metadata.name and `str(ip)` Python's canonical text of the address:
dotted quad for IPv4, RFC 5952 compressed lowercase for IPv6 (`2001:db8::a`). Nodes are ordered
by score as 32 unsigned bytes, **lowest first**, which is exactly MetalLB's order (its speaker
sorts with `bytes.Compare(hash_i, hash_j) < 0` over the same string, and Go's net.IP.String()
writes the same text): a cluster moving from MetalLB keeps each IP on the node that had it, so
no client has to re-learn a MAC. Equal digests for two names would be a sha256 collision; the
node name breaks that tie only to keep the order total.

Each score depends only on its own node and the IP, so removing a node never reorders the others
(the rendezvous property): when the owner leaves the eligible set, rank 2 becomes rank 1 and
nothing else moves. Rank 1 owns the IPs; ranks 2 and 3 are its monitors (liveness.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from lbctl.core.model import IPAddress, NodeName

# Ranks 2 and 3 probe the owner; rank 3 takes over only when ranks 1 and 2 both fail (issue 9).
MONITOR_COUNT = 2


def score(node: str, ip: IPAddress) -> bytes:
    """The node's rendezvous score for `ip`; the lowest score ranks first (module docstring)."""
    return hashlib.sha256(f"{node}#{ip}".encode()).digest()


def rank(nodes: Iterable[NodeName], key_ip: IPAddress) -> tuple[NodeName, ...]:
    """The nodes (duplicates dropped) in rank order for `key_ip`: the owner first."""
    # score() inlined, the IP's text made once: the planner ranks every node for every group.
    suffix, sha256 = f"#{key_ip}".encode(), hashlib.sha256
    return tuple(
        sorted(set(nodes), key=lambda node: (sha256(node.encode() + suffix).digest(), node))
    )


def owner(ranking: Sequence[NodeName]) -> NodeName | None:
    """Rank 1, or None when nobody is eligible."""
    return ranking[0] if ranking else None


def monitors(ranking: Sequence[NodeName]) -> tuple[NodeName, ...]:
    """Ranks 2 and 3 (fewer when fewer nodes are eligible), in rank order."""
    return tuple(ranking[1 : 1 + MONITOR_COUNT])


def outranks(node: str, other: str, key_ip: IPAddress) -> bool:
    """Whether `node` comes before `other` for `key_ip`, eligible or not: the conflict rule (the
    node ranked higher keeps the IP) needs no ranking, only the two names."""
    return (score(node, key_ip), node) < (score(other, key_ip), other)
