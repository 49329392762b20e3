"""Event reasons (one CamelCase enum) and the dedup memory; used by reconciler, posted by kube."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lbctl.core.reasons import AllocFailure, AllocSuccess

COMPONENT = "lbctl-controller"


class EventReason(enum.StrEnum):
    """Every Event reason the controller posts; failure reasons reuse AllocFailure's words
    (for_failure), successes map to IPAllocated or Renumbered (for_success)."""

    IP_ALLOCATED = "IPAllocated"
    IP_RELEASED = "IPReleased"
    RENUMBERED = "Renumbered"
    # Service failures: the same words as the IPAllocated condition's reason (AllocFailure).
    NO_POOL_MATCHES = "NoPoolMatches"
    POOL_EXHAUSTED = "PoolExhausted"
    UNKNOWN_POOL = "UnknownPool"
    REQUESTED_IP_UNAVAILABLE = "RequestedIPUnavailable"
    SHARING_CONFLICT = "SharingConflict"
    FAMILY_UNAVAILABLE = "FamilyUnavailable"
    INVALID_ANNOTATION = "InvalidAnnotation"
    CONFIG_INVALID = "ConfigInvalid"
    CLASS_MISMATCH = "ClassMismatch"
    # On the pool ConfigMap.
    CONFIG_LOADED = "ConfigLoaded"
    CONFIG_REJECTED = "ConfigRejected"  # valid, but would move assigned IPs
    CONFIG_MISSING = "ConfigMissing"

    @classmethod
    def for_failure(cls, reason: AllocFailure) -> EventReason:
        return cls(reason.value)

    @classmethod
    def for_success(cls, reason: AllocSuccess) -> EventReason:
        return cls.RENUMBERED if reason is AllocSuccess.RENUMBERED else cls.IP_ALLOCATED


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an Event is about (core/v1 involvedObject)."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "v1"


@dataclass(frozen=True, slots=True)
class EventWrite:
    ref: ObjectRef
    type: EventType
    reason: EventReason
    message: str


class Deduper:
    """Remembers the last Event sent per object: a state repeated on resync is not re-posted.

    A Service pending through any number of resyncs gets one Event per reason it passes through;
    the memory is per object (a few dozen bytes), dropped when the object is deleted.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], tuple[EventReason, str]] = {}

    def offer(
        self, ref: ObjectRef, type_: EventType, reason: EventReason, message: str, *, by: str = ""
    ) -> EventWrite | None:
        """An EventWrite if (reason, and `by`'s value) differs from the last one for ref."""
        slot = (ref.kind, ref.namespace, ref.name)
        if self._last.get(slot) == (reason, by):
            return None
        self._last[slot] = (reason, by)
        return EventWrite(ref, type_, reason, message)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._last.pop((kind, namespace, name), None)

    def __len__(self) -> int:
        return len(self._last)
