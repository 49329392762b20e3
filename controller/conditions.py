"""The `lbctl.io/IPAllocated` condition (metav1.Condition) and the Verdict it shows; for the
reconciler. The shape is lbctl.core.condition's (shared with the speaker's conditions): a True
condition carries an AllocSuccess reason, a False one an AllocFailure, and nothing else can.

A condition is rewritten only when what it says changes (status, reason, message or the observed
generation); lastTransitionTime moves only when the status flips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from lbctl.core import condition as shape
from lbctl.core.allocator import Assignment
from lbctl.core.condition import MAX_MESSAGE, Shown, Verdict, clip
from lbctl.core.model import IPAddress
from lbctl.core.reasons import AllocFailure, AllocSuccess

__all__ = [
    "CONDITION_TYPE",
    "MAX_MESSAGE",
    "AllocVerdict",
    "Shown",
    "build",
    "clip",
    "find",
    "for_assignment",
    "for_failure",
    "ip_list",
    "kept_despite",
    "removal",
    "up_to_date",
]

CONDITION_TYPE = "lbctl.io/IPAllocated"

# What the condition says: held with a success reason, or not with a failure reason. Built only
# by for_assignment / kept_despite (True) and for_failure (False).
AllocVerdict = Verdict[AllocSuccess] | Verdict[AllocFailure]


def ip_list(ips: Sequence[IPAddress]) -> str:
    return ", ".join(str(ip) for ip in ips)


def find(status: object) -> Mapping[str, object] | None:
    """Our condition in a status mapping, or None."""
    return shape.find(status, CONDITION_TYPE)


def up_to_date(existing: Shown | None, verdict: AllocVerdict, generation: int) -> bool:
    if existing is None:
        return False
    shown = (existing.status, existing.reason, existing.message, existing.generation)
    return shape.says(shown, verdict, generation)


def build(
    verdict: AllocVerdict, existing: Shown | None, generation: int, now: datetime
) -> dict[str, object]:
    """The condition to write: lastTransitionTime kept unless the status flips."""
    return shape.build(
        CONDITION_TYPE,
        verdict,
        generation=generation,
        now=now,
        previous_status=None if existing is None else existing.status,
        previous_since=None if existing is None else existing.since,
    )


def removal() -> dict[str, object]:
    """A strategic-merge list entry deleting our condition (and no other)."""
    return shape.removal(CONDITION_TYPE)


def for_assignment(a: Assignment) -> Verdict[AllocSuccess]:
    """True: Allocated, Renumbered, or Restored for IPs kept outside every pool."""
    if a.pool is None or a.orphaned:
        kept = ip_list(a.orphaned or a.ips)
        message = f"kept {kept} found in status: in no pool of the config"
        return Verdict(True, AllocSuccess.RESTORED, message)
    if a.reason is AllocSuccess.RENUMBERED:
        return Verdict(True, a.reason, f"moved to {ip_list(a.ips)} from pool {a.pool}")
    # Restored IPs inside a pool read as Allocated, as before the restart: a restart must not
    # rewrite every Service's condition.
    message = f"assigned {ip_list(a.ips)} from pool {a.pool}"
    return Verdict(True, AllocSuccess.ALLOCATED, message)


def for_failure(reason: AllocFailure, message: str) -> Verdict[AllocFailure]:
    return Verdict(False, reason, message)


def kept_despite(a: Assignment, problem: str) -> Verdict[AllocSuccess]:
    """An assigned Service whose annotations became unreadable keeps its IPs and is told why."""
    message = f"kept {ip_list(a.ips)}; annotations not applied: {problem}"
    return Verdict(True, AllocSuccess.ANNOTATION_IGNORED, message)
