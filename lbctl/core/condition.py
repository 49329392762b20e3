"""One shape for lbctl's Service conditions (metav1.Condition): a Verdict (holds or not, an enum
reason, a message) and the helpers that find, write and remove one condition type in a status.
Pure; used by controller/conditions.py (`lbctl.io/IPAllocated`) and lbctl.core.l2condition
(`lbctl.io/AnnouncedL2`, which lbctl.core.bgpcondition reuses for `lbctl.io/AnnouncedBGP`).

A condition is rewritten only when what it says changes, and its message is deterministic, so the
same decision gives the same bytes; lastTransitionTime moves only when the status flips.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from lbctl.core.timefmt import rfc3339

# metav1.Condition caps message at 32768 characters; keep Events and conditions well below.
MAX_MESSAGE = 1024

# The reason: a StrEnum (CamelCase values) in lbctl.core.reasons.
Reason_co = TypeVar("Reason_co", bound=str, covariant=True)
Share = Callable[[str], str]  # a string -> one shared copy of it (Shown.of)


def _same(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Verdict(Generic[Reason_co]):
    """What a condition should say about one object: `held` is its status."""

    held: bool
    reason: Reason_co
    message: str

    @property
    def status(self) -> str:
        return "True" if self.held else "False"


def clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def find(status: object, type_: str) -> Mapping[str, object] | None:
    """The condition of type `type_` in a status mapping, or None."""
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    return next(
        (c for c in conditions if isinstance(c, Mapping) and c.get("type") == type_),
        None,
    )


@dataclass(frozen=True, slots=True)
class Shown:
    """A condition as an object shows it: only what Kind.up_to_date() and Kind.condition() read,
    kept per Service by the speaker (a slim copy, ~0.3 KiB, instead of the body's dict and its
    keys, ~1 KiB; status and reason are a handful of shared strings)."""

    status: object
    reason: object
    message: object
    generation: object  # observedGeneration
    since: object  # lastTransitionTime

    @classmethod
    def of(cls, cond: Mapping[str, object] | None, share: Share = _same) -> Shown | None:
        """`share` returns one shared copy of an equal string (the speaker's table: a write
        burst gives thousands of conditions one lastTransitionTime, and failures one message)."""
        if cond is None:
            return None
        status, reason = cond.get("status"), cond.get("reason")
        message, since = cond.get("message"), cond.get("lastTransitionTime")
        return cls(
            sys.intern(status) if isinstance(status, str) else status,
            sys.intern(reason) if isinstance(reason, str) else reason,
            share(message) if isinstance(message, str) else message,
            cond.get("observedGeneration", 0),  # the API server omits a zero
            share(since) if isinstance(since, str) else since,
        )


def says(shown: tuple[object, object, object, object], said: Verdict[str], generation: int) -> bool:
    """Whether a condition showing (status, reason, message, observedGeneration) says `said`."""
    return shown == (said.status, str(said.reason), clip(said.message), generation)


def build(
    type_: str,
    said: Verdict[str],
    *,
    generation: int,
    now: datetime,
    previous_status: object = None,
    previous_since: object = None,
) -> dict[str, object]:
    """The condition to write: lastTransitionTime kept unless the status flips."""
    since = previous_since
    if previous_status != said.status or not isinstance(since, str):
        since = rfc3339(now)
    return {
        "type": type_,
        "status": said.status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": str(said.reason),
        "message": clip(said.message),
    }


def removal(type_: str) -> dict[str, object]:
    """A strategic-merge list entry deleting the condition of type `type_` (and no other)."""
    return {"type": type_, "$patch": "delete"}


@dataclass(frozen=True, slots=True)
class Kind:
    """One condition type's find / compare / build / remove, for a writer that holds several
    (the speaker writes AnnouncedL2 and AnnouncedBGP)."""

    type_: str

    def find(self, status: object, share: Share = _same) -> Shown | None:
        """Our condition in a status mapping, as Shown (`share`: Shown.of's), or None."""
        return Shown.of(find(status, self.type_), share)

    def up_to_date(self, previous: Shown | None, said: Verdict[str], generation: int) -> bool:
        """Whether `previous` (find()'s result) already says this: then nothing is written."""
        if previous is None:
            return False
        shown = (previous.status, previous.reason, previous.message, previous.generation)
        return says(shown, said, generation)

    def condition(
        self,
        said: Verdict[str],
        *,
        generation: int,
        now: datetime,
        previous: Shown | None,
    ) -> dict[str, object]:
        """The condition to write: lastTransitionTime kept unless the status flips."""
        before = previous or Shown(None, None, None, None, None)
        return build(
            self.type_, said, generation=generation, now=now,
            previous_status=before.status, previous_since=before.since,
        )  # fmt: skip

    def removal(self) -> dict[str, object]:
        return removal(self.type_)
