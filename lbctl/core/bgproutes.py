"""The values the BGP planner hands the BGP announcer, and what the announcer reports back.

The planner (lbctl.core.bgpplan) decides, for one node, which sessions it holds and which prefixes
go to which peer with which attributes; the announcer (speaker.announcers.bgp) turns that into
ExaBGP configuration and commands, and reports per peer whether the session is up and which
prefixes ExaBGP acknowledged. Neither side needs more of the other than these types.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from lbctl.core.model import BGPPeer, Community, IPAddress, PeerName, Secret

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RouteAttrs:
    """Path attributes of one prefix towards one peer. The planner already dropped local-pref
    for eBGP peers (it is sent on iBGP sessions only) and merged the advertisements that cover
    the same prefix (communities: sorted union; local-pref: the highest)."""

    local_pref: int | None = None
    communities: tuple[Community, ...] = ()


# For each peer of this node: every prefix it should carry, with its attributes. A peer missing
# from the mapping (or mapped to nothing) carries no route.
Desired = Mapping[PeerName, Mapping[IPNetwork, RouteAttrs]]


@dataclass(frozen=True, slots=True)
class Session:
    """One BGP session this node should hold: the peer as configured plus what the node brings.

    Two Sessions compare equal exactly when ExaBGP's configuration for them is the same, so the
    announcer restarts a session only when this value changes.
    """

    peer: BGPPeer
    router_id: ipaddress.IPv4Address  # peer.router_id, else the node's first IPv4 address
    local_address: IPAddress | None = None  # peer.source_address, else the node's address
    password: Secret | None = field(default=None, repr=False)  # inline or read from the Secret


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What the announcer knows of one peer's session, for the condition and the metrics."""

    established: bool
    sent: frozenset[IPNetwork] = frozenset()  # acknowledged by ExaBGP while established
    since: float = 0.0  # time.monotonic() of the last state change
    error: str = ""  # why it is down, when known (never holds the password)


Statuses = Mapping[PeerName, PeerStatus]
