"""The `lbctl.io/AnnouncedL2` condition: what it says (announced by NODE on INTERFACE, or why
nobody), compared without its timestamp so it is written only when it changes; used by agent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lbctl.core.l2plan import AnnouncementGroup
from lbctl.core.model import NodeName
from lbctl.core.reasons import L2Failure, L2Success
from lbctl.core.timefmt import rfc3339

CONDITION_TYPE = "lbctl.io/AnnouncedL2"


@dataclass(frozen=True, slots=True)
class Condition:
    """status, reason and message; equal conditions are not written again."""

    status: str
    reason: str
    message: str

    def body(self) -> dict[str, Any]:
        return {
            "type": CONDITION_TYPE,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": rfc3339(datetime.now(UTC)),
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Condition:
        return cls(str(body.get("status", "")), str(body.get("reason", "")),
                   str(body.get("message", "")))  # fmt: skip


def announced(node: NodeName, interface: str) -> Condition:
    return Condition("True", L2Success.ANNOUNCED.value, f"announced by {node} on {interface}")


def not_announced(reason: L2Failure, group: AnnouncementGroup) -> Condition:
    """Why nobody announces the group's IPs, in words that name what to fix."""
    ips = ", ".join(map(str, group.ips))
    pool = f"pool {group.pool!r}" if group.pool else "no pool"
    words = {
        L2Failure.NO_L2_ADVERTISEMENT: f"{ips}: {pool} has no L2 advertisement",
        L2Failure.NO_READY_ENDPOINTS: f"{ips}: no ready endpoint",
        L2Failure.NO_ELIGIBLE_NODE: f"{ips}: no eligible node ({_skips(group)})",
        L2Failure.NO_INTERFACE_FOR_IP: f"{ips}: no eligible node has an interface for it",
    }
    return Condition("False", reason.value, words[reason])


def _skips(group: AnnouncementGroup) -> str:
    shown = sorted(group.skipped.items())[:5]
    more = len(group.skipped) - len(shown)
    text = ", ".join(f"{node}: {reason.value}" for node, reason in shown) or "no nodes"
    return text + (f", and {more} more" if more > 0 else "")
