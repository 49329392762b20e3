"""The `lbctl.io/IPAllocated` condition (metav1.Condition) and the Verdict it shows; for reconciler.

A condition is rewritten only when what it says changes (status, reason, message or the observed
generation); lastTransitionTime moves only when the status flips.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from lbctl.core.allocator import Assignment
from lbctl.core.model import IPAddress
from lbctl.core.reasons import AllocFailure, AllocSuccess
from lbctl.core.timefmt import rfc3339

CONDITION_TYPE = "lbctl.io/IPAllocated"
# metav1.Condition caps message at 32768 characters; keep Events and conditions well below.
MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the condition should say about one Service."""

    allocated: bool
    reason: str  # CamelCase: AllocSuccess / AllocFailure values
    message: str

    @property
    def status(self) -> str:
        return "True" if self.allocated else "False"


def ip_list(ips: Sequence[IPAddress]) -> str:
    return ", ".join(str(ip) for ip in ips)


def clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def find(status: object) -> Mapping[str, object] | None:
    """Our condition in a status mapping, or None."""
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") == CONDITION_TYPE:
            return cond
    return None


@dataclass(frozen=True, slots=True)
class Shown:
    """Our condition as a Service shows it: only what up_to_date() and build() read, kept for
    every Service (a slim copy, no dict; status and reason are a handful of shared strings)."""

    status: object
    reason: object
    message: object
    generation: object  # observedGeneration
    since: object  # lastTransitionTime

    @classmethod
    def of(cls, cond: Mapping[str, object] | None) -> Shown | None:
        if cond is None:
            return None
        status, reason = cond.get("status"), cond.get("reason")
        return cls(
            sys.intern(status) if isinstance(status, str) else status,
            sys.intern(reason) if isinstance(reason, str) else reason,
            cond.get("message"),
            cond.get("observedGeneration", 0),  # the API server omits a zero
            cond.get("lastTransitionTime"),
        )


def up_to_date(existing: Shown | None, verdict: Verdict, generation: int) -> bool:
    return existing is not None and (
        existing.status,
        existing.reason,
        existing.message,
        existing.generation,
    ) == (verdict.status, verdict.reason, clip(verdict.message), generation)


def build(
    verdict: Verdict, existing: Shown | None, generation: int, now: datetime
) -> dict[str, object]:
    """The condition to write: lastTransitionTime kept unless the status flips."""
    since = existing.since if existing is not None else None
    if existing is None or existing.status != verdict.status or not isinstance(since, str):
        since = rfc3339(now)
    return {
        "type": CONDITION_TYPE,
        "status": verdict.status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": verdict.reason,
        "message": clip(verdict.message),
    }


def removal() -> dict[str, object]:
    """A strategic-merge list entry deleting our condition (and no other)."""
    return {"type": CONDITION_TYPE, "$patch": "delete"}


def for_assignment(a: Assignment) -> Verdict:
    """True: Allocated, Renumbered, or Restored for IPs kept outside every pool."""
    if a.pool is None or a.orphaned:
        kept = ip_list(a.orphaned or a.ips)
        return Verdict(True, "Restored", f"kept {kept} found in status: in no pool of the config")
    if a.reason is AllocFailure.RENUMBERED:
        return Verdict(True, a.reason.value, f"moved to {ip_list(a.ips)} from pool {a.pool}")
    message = f"assigned {ip_list(a.ips)} from pool {a.pool}"
    return Verdict(True, AllocSuccess.ALLOCATED.value, message)


def for_failure(reason: AllocFailure, message: str) -> Verdict:
    return Verdict(False, reason.value, message)


def kept_despite(a: Assignment, problem: str) -> Verdict:
    """An assigned Service whose annotations became unreadable keeps its IPs and is told why."""
    return Verdict(
        True,
        AllocFailure.INVALID_ANNOTATION.value,
        f"kept {ip_list(a.ips)}; annotations not applied: {problem}",
    )
