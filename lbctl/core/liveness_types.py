"""The shapes and numbers of L2 liveness: the timing constants, the verdicts, an announcement
group, a peer's report, what this node knows of a peer or another holder, and the Actions a tick
returns. The state machine is lbctl.core.liveness; the speaker's data plane (speaker.dataplane and
its modules) and speaker.probes (the wire format of reports) use these too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lbctl.core.model import IPAddress, NodeName

PROBE_INTERVAL = 0.1  # s between probes to a monitored node
# A probe counts as answered by any message from the node since half an interval before it was
# sent: a node that monitors this one too does not ack (its own probe, sent at the same instant
# of the wall clock, answers; speaker.dataplane_messages), and it may land just before or just
# after this node's tick
ANSWER_SLACK = PROBE_INTERVAL / 2
MISSES = 5  # consecutive unanswered probes before a monitor suspects the node (500 ms)
# s for the checks before a takeover: 3 indirect probes through the other monitor, 3 ARP probes
# of the VIP and 2 more direct probes, any answer cancelling. With 20 % loss on every port a
# single round trip fails 36 % of the time: these retries keep a false takeover below ~0.3 %
# a minute (docs/speaker.md); 200 ms keeps a real takeover under 1 s.
CHECK_WAIT = 0.2
CHECK_TRIES = 3
HANDBACK_AFTER = 5.0  # s of answers before a group goes back to a returning node (no flip-flop)
HOLDER_TIMEOUT = 2.5  # s without word from another holder before rank 1 stops waiting for it
STARTUP_HOLD = 0.3  # s a new speaker listens for holders before it takes its own groups
STALL = 0.5  # s of own loop lag after which a holder drops what it holds
ISOLATED_AFTER = 3.0  # s with neither a peer's message nor an API success: withdraw everything


class Verdict(enum.StrEnum):
    """Why this node holds a group, or why not (logs and metrics carry these)."""

    OWNER = "Owner"  # rank 1
    TOOK_OVER = "TookOver"  # a monitor acting for failed higher ranks
    NOT_OWNER = "NotOwner"
    NOT_ELIGIBLE = "NotEligible"
    CANNOT_CARRY = "NoInterfaceForIP"
    RETURNING = "Returning"  # rank 1 waiting for the acting owner's hand-back
    STARTING = "Starting"
    LEAVING = "Leaving"
    ISOLATED = "Isolated"


class GroupView(Protocol):
    """What liveness reads of an announcement group: its key IP (the ranking key), all its IPs,
    the eligible nodes in rank order. The speaker hands over the L2 planner's own groups
    (lbctl.core.l2plan.AnnouncementGroup), so a Service's group is one object, not two."""

    @property
    def key(self) -> IPAddress: ...

    @property
    def ips(self) -> tuple[IPAddress, ...]: ...

    @property
    def ranking(self) -> tuple[NodeName, ...]: ...


@dataclass(frozen=True, slots=True)
class Group:
    """One announcement group (a GroupView): its key IP (the ranking key), all its IPs, the
    eligible nodes in rank order (lbctl.core.election)."""

    key: IPAddress
    ips: tuple[IPAddress, ...]
    ranking: tuple[NodeName, ...]


@dataclass(frozen=True, slots=True)
class Report:
    """What a probe or an ack says about its sender."""

    node: NodeName
    fresh: bool  # the sender's API view is fresh
    leaving: bool = False
    macs: tuple[str, ...] = ()
    cannot: frozenset[IPAddress] = frozenset()  # group keys it has no interface for
    holding: Mapping[IPAddress, int] = field(default_factory=dict)  # group key -> epoch


@dataclass(slots=True)
class Peer:
    """What this node knows of one node it monitors."""

    misses: int = 0
    heard_at: float = -1e9  # the node's last message (any kind: a probe, an ack, a check)
    last_probe: float = -1e9
    answering_since: float | None = None  # start of the current run of answers
    report: Report | None = None
    suspect_since: float | None = None  # 5 misses seen; indirect and ARP checks running
    cleared: bool = False  # a check answered while suspect
    dead: bool = False


@dataclass(frozen=True, slots=True)
class Holder:
    """Another node holding a group, by its reports (when heard last: Liveness.heard)."""

    node: NodeName
    epoch: int


@dataclass(frozen=True, slots=True)
class Actions:
    """What the shell sends after a tick."""

    probes: tuple[NodeName, ...] = ()
    indirect: tuple[tuple[NodeName, NodeName], ...] = ()  # (ask this node, to probe that one)
    arp_probes: tuple[IPAddress, ...] = ()  # VIPs to ARP-probe
    handbacks: tuple[tuple[NodeName, tuple[IPAddress, ...]], ...] = ()
