"""The layer-2 announcer's public values: desired state, hooks, probe results, reasons and
timing; used by announcer.py and by the speaker."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from speaker.announcers.layer2.frames import MacAddress
from speaker.announcers.layer2.interfaces import IPAddress

# A new holder announces at once, then every 1.1 s for 5 s (5 frames): switches and clients that
# drop the first frames (a port still learning, a busy or lossy link) get four more chances.
# Above 1 s because Linux ignores a second ARP update within neigh locktime (1 s by default).
BURST_INTERVAL = 1.1
BURST_SPAN = 5.0
# RFC 5227 probes 3 times (PROBE_NUM); the liveness design gives the whole check ~100 ms before
# a takeover (../shared/reference/liveness.md), so the probes are spread over that window.
PROBE_ATTEMPTS = 3
PROBE_WINDOW = 0.1

Desired = Mapping[IPAddress, str]  # each VIP this node must answer for -> its interface's name


class HoldFailure(enum.StrEnum):
    """Why a desired VIP is not answered for (announcer.unheld)."""

    INTERFACE_MISSING = "InterfaceMissing"  # no Ethernet-like interface of that name
    INTERFACE_DOWN = "InterfaceDown"  # administratively down or no carrier
    SOCKET_FAILED = "SocketFailed"  # opening its socket or joining its group failed (logged)


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class Layer2Hooks:
    """What the announcer tells its owner, each a no-op by default. Called on the loop, with
    the VIP and the interface name; keep them quick (metrics, a queue put)."""

    on_announce: Callable[[IPAddress, str], None] = _ignore  # one GARP / unsolicited NA sent
    on_request: Callable[[IPAddress, str], None] = _ignore  # ARP who-has / NS for a held VIP
    on_answer: Callable[[IPAddress, str], None] = _ignore  # a reply sent
    # Another MAC claimed a VIP held here, on its interface (GARP, ARP, NA): the speaker tells a
    # peer speaker (known from acks) from a DuplicateResponder.
    on_foreign_claim: Callable[[IPAddress, MacAddress, str], None] = _ignore
    # The interface view changed (a link up or down, an address added or removed), after the
    # announcer re-resolved what it holds: the speaker re-checks which groups it can carry.
    on_interfaces: Callable[[], None] = lambda: None
    # False while the owner's loop has not ticked for too long (a SIGSTOP, a stalled machine):
    # frames read then were queued during the stall, and a burst frame due then was planned
    # before it, when this node may have been taken over since. Such frames are read and
    # dropped, and burst frames skipped, until the owner has ticked and dropped what it held
    # (an answer sent first made the takeover node yield back: a flap in test_a_stalled_owner).
    awake: Callable[[], bool] = lambda: True


@dataclass(frozen=True)
class ProbeResult:
    """Who answered a probe for `vip` on `interface` (this node's own MAC never counts); true
    when anybody did."""

    vip: IPAddress
    interface: str
    answered_by: frozenset[MacAddress]

    @property
    def answered(self) -> bool:
        return bool(self.answered_by)

    def __bool__(self) -> bool:
        return self.answered
