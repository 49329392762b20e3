"""Leader election's pure half: Lease timing, the record, the decision table, the specs we write.
Called by controller.lease (the shell that reads the clock and talks to the API).

As client-go's leaderelection: expiry is measured on the candidate's own monotonic clock from the
moment it last saw the record change, never from the remote renewTime; times come in as arguments.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lbctl.core.timefmt import micro_time

LEASE_NAME = "lbctl-controller"
Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Seconds. client-go's defaults are 15 / 10 / 2 (takeover up to ~24 s); ours keep its
    ratios (renew deadline = 2/3 of the lease) but are 5x shorter, because issue 4 asks for a
    takeover within 5 s of the leader dying:

    - worst-case takeover = lease + 2 * retry * (1 + jitter) = 3 + 1.2 = 4.2 s (+ latency): the
      standby sees the dead leader's last renew at most one jittered retry late, then needs
      `lease_duration` unchanged on its own clock, noticed at most one jittered retry late;
    - fencing margin = lease - renew deadline = 1 s: a leader that cannot renew stops writing
      at least 1 s before any standby may take over, which covers a write already in flight;
    - load: the leader PUTs every 0.5 s and each standby GETs every 0.5-0.6 s, a few small
      requests a second; 4 renew attempts fit in the renew deadline, so one slow or failed
      request does not cost leadership.
    """

    lease_duration: int = 3  # leaseDurationSeconds is an int32 in the API
    renew_deadline: float = 2.0
    retry_period: float = 0.5
    jitter: float = 0.2  # standbys wait retry * (1 + jitter * U[0,1)); client-go's is 1.2
    request_timeout: float = 1.0  # per API call; a hung call must not outlive the deadline

    def __post_init__(self) -> None:
        if not 0 < self.retry_period * (1 + self.jitter) < self.renew_deadline:
            raise ValueError("retry_period * (1 + jitter) must be below renew_deadline")
        if not self.renew_deadline < self.lease_duration:
            raise ValueError("renew_deadline must be below lease_duration (the fencing margin)")
        if not 0 < self.request_timeout <= self.renew_deadline:
            raise ValueError("request_timeout must be positive and at most renew_deadline")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease as last read; holder "" means nobody (never held, or released)."""

    holder: str
    duration: int  # leaseDurationSeconds; 0 when missing, as client-go reads it
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str


def parse_lease(body: Body) -> LeaseRecord:
    spec = body.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
    )


class Action(enum.Enum):
    CREATE = "create"  # POST a new Lease naming us
    ACQUIRE = "acquire"  # PUT us as holder over a released or expired record
    RENEW = "renew"  # PUT a fresh renewTime on our own record
    WAIT = "wait"  # someone else holds a live lease
    LOST = "lost"  # we thought we led, the record says otherwise: stop at once


class Why(enum.Enum):
    ABSENT = "absent"
    OURS = "ours"
    RELEASED = "released"
    EXPIRED = "expired"
    HELD = "held_by_other"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    why: Why


def decide(
    record: LeaseRecord | None, observed_at: float, now: float, identity: str, *, leading: bool
) -> Decision:
    """What to do given the record as last seen, when we saw it change (our clock) and now."""
    if record is None:
        why = Why.ABSENT
    elif record.holder == identity:
        return Decision(Action.RENEW, Why.OURS)
    elif not record.holder:
        why = Why.RELEASED
    elif now >= observed_at + record.duration:
        why = Why.EXPIRED
    else:
        why = Why.HELD
    if leading:
        return Decision(Action.LOST, why)
    if why is Why.ABSENT:
        return Decision(Action.CREATE, why)
    return Decision(Action.WAIT if why is Why.HELD else Action.ACQUIRE, why)


def is_fresh(renewed_at: float | None, now: float, renew_deadline: float) -> bool:
    """Fencing: we may write only until `renew_deadline` after our last successful renew began."""
    return renewed_at is not None and now < renewed_at + renew_deadline


def lease_spec(
    record: LeaseRecord | None, identity: str, duration: int, now: datetime
) -> dict[str, Any]:
    """The spec we write to hold the lease: a change of holder counts one transition."""
    stamp = micro_time(now)
    if record is not None and record.holder == identity:
        acquired, transitions = record.acquire_time or stamp, record.transitions
    elif record is not None:
        acquired, transitions = stamp, record.transitions + 1
    else:
        acquired, transitions = stamp, 0
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord, now: datetime) -> dict[str, Any]:
    """Like client-go's ReleaseOnCancel: no holder and a 1 s lease, so a standby takes it now."""
    stamp = micro_time(now)
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": record.transitions,
    }
