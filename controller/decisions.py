"""The reconciler's output: Decisions (the writes to make) and the Recorder that counts them
(metrics.py); made by controller.reconciler, queued by controller.writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controller.events import EventWrite
from controller.observed import ServiceWrite
from lbctl.core.model import ServiceKey
from lbctl.core.reasons import AllocFailure, AllocSuccess


class Recorder(Protocol):
    """Where decisions are counted (metrics.py); the default counts nothing."""

    def allocated(self, reason: AllocSuccess) -> None: ...
    def failed(self, reason: AllocFailure) -> None: ...


class NoRecorder:
    def allocated(self, reason: AllocSuccess) -> None:
        pass

    def failed(self, reason: AllocFailure) -> None:
        pass


@dataclass
class Decisions:
    """Writes to make, in order: Service patches, then Events. `settle` (deferred decisions
    only) names Services whose patch and Events Reconciler.settle() builds when they are due."""

    services: list[ServiceWrite] = field(default_factory=list)
    events: list[EventWrite] = field(default_factory=list)
    settle: list[ServiceKey] = field(default_factory=list)

    def __iadd__(self, other: Decisions) -> Decisions:
        self.services += other.services
        self.events += other.events
        self.settle += other.settle
        return self

    def __bool__(self) -> bool:
        return bool(self.services or self.events or self.settle)
