"""What the speaker's data plane (speaker.dataplane) exchanges with the rest of the speaker: the
Plan the control loop (speaker.agent) hands it, the Held groups it hands back, and the L2
announcer as it uses it (Announcer; speaker.runner passes speaker.announcers.layer2's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from lbctl.core.liveness_types import GroupView, Verdict
from lbctl.core.model import IPAddress, NodeName


class Answered(Protocol):
    """What the announcer's probe of a VIP found: any answer, and the MACs that answered."""

    @property
    def answered(self) -> bool: ...

    @property
    def answered_by(self) -> frozenset[str]: ...


class Announcer(Protocol):
    """The L2 announcer as the data plane uses it (speaker.announcers.layer2)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def sync(self, desired: Mapping[IPAddress, str]) -> None: ...

    def update(self, changes: Mapping[IPAddress, str | None]) -> None: ...

    def reannounce(self, vip: IPAddress) -> None: ...

    def interface_for(self, ip: IPAddress, allowed: tuple[str, ...]) -> str | None: ...

    def macs(self) -> tuple[str, ...]: ...

    def discard_pending(self) -> int: ...

    async def probe(
        self, vip: IPAddress, interface: str | None = None, *, window: float = ...
    ) -> Answered: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """What the control loop hands over: groups, the interfaces each may use, and peers'
    addresses (whether the API view is fresh comes apart: DataPlane.set_fresh)."""

    groups: tuple[GroupView, ...]
    interfaces: Mapping[IPAddress, tuple[str, ...]]  # group key -> allowed interfaces (or all)
    addresses: Mapping[NodeName, IPAddress]  # node -> InternalIP, where its speaker listens
    # the difference from the plan handed over before: each group key added, changed (its
    # group or its interfaces) or removed (None); None when this plan is to be taken whole
    changed: Mapping[IPAddress, GroupView | None] | None = None

    def after(self, earlier: Plan) -> Plan:
        """This plan as one change from the plan before `earlier` (two plans handed over
        before the data plane took the first: their differences merged)."""
        if self.changed is None:
            return self
        if earlier.changed is None:
            return dataclasses.replace(self, changed=None)
        return dataclasses.replace(self, changed={**earlier.changed, **self.changed})


@dataclass(frozen=True, slots=True)
class Held:
    """One group this node announces, for the condition writer and metrics."""

    key: IPAddress
    ips: tuple[IPAddress, ...]
    interface: str
    verdict: Verdict
