"""The `lbctl.io/AnnouncedL2` and `lbctl.io/AnnouncedBGP` conditions the speaker writes: which
node writes a group's or a Service's condition, what it says, and the patches (CONDITION_WRITERS
in flight, through speaker.kube). ConditionWriter is the base class of speaker.agent's Agent,
which owns the indexes and plans declared below and runs the writes on a task of their own.

A pool with only BGP advertisements gets no AnnouncedL2 condition saying NoL2Advertisement, and
one with only L2 advertisements no AnnouncedBGP saying NoBGPAdvertisement: each condition
speaks for a mode the Service's pool uses, or for both when it uses neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from lbctl.core import bgpcondition, election, l2condition
from lbctl.core.adapt import HeldService, NodeInfo
from lbctl.core.bgpcondition import Sessions
from lbctl.core.bgpplan import ServiceRoutes
from lbctl.core.condition import Kind, Shown
from lbctl.core.eligibility import pool_of
from lbctl.core.l2condition import L2Verdict
from lbctl.core.l2plan import AnnouncementGroup
from lbctl.core.model import Config, IPAddress, NodeName, PoolName, ServiceKey
from lbctl.core.plantables import GroupTable
from lbctl.core.reasons import BGPFailure, L2Failure
from speaker.bgp import SENDING_HOLD, BGPSide
from speaker.dataplane import DataPlane
from speaker.dataplane_types import Held
from speaker.indexes import Sharing
from speaker.kube import Kube, KubeError
from speaker.metrics import Metrics

log = logging.getLogger("lbctl.speaker")
CONDITION_WRITERS = 4  # condition patches in flight at once (a plan may change thousands)


@dataclass(frozen=True, slots=True)
class Announcing:
    """Who announces a group as its condition tells (None: nobody) and on which interfaces."""

    node: NodeName | None
    interfaces: tuple[str, ...] = ()


@dataclass(slots=True)
class Observed:
    """What the speaker keeps of a Service: parsed fields and its current conditions (Shown,
    not the body's dicts: ~0.7 KiB less per Service). No uid: an Event reads it when posted."""

    held: HeldService
    generation: int
    condition: Shown | None  # AnnouncedL2
    bgp_condition: Shown | None = None  # AnnouncedBGP


class ConditionWriter:
    """Writes the conditions of the Services this node speaks for, on the agent's loop; reads the
    agent's state (set by Agent)."""

    # set by Agent
    node: NodeName
    kube: Kube
    metrics: Metrics
    dataplane: DataPlane
    config: Config | None
    nodes: dict[NodeName, NodeInfo]
    node_sessions: dict[NodeName, Sessions]  # each node's published BGP sessions
    services: dict[ServiceKey, Observed]
    l2: GroupTable
    bgp: BGPSide | None
    bgp_by: dict[ServiceKey, ServiceRoutes]
    _recheck: set[ServiceKey] | None  # the Services whose conditions may be wrong (None: all)
    _conditions_due: asyncio.Event  # set: a conditions pass is due
    _hold_timer: asyncio.TimerHandle | None = None  # the pass after the BGP conditions waited
    held: dict[IPAddress, Held]
    share: Sharing  # one copy of equal strings (Shown.of)

    def _writes(self, group: AnnouncementGroup) -> Announcing | None:
        """What this node says of `group` if it is the one to write its condition, else None:
        the holder writes "announced"; when nobody may announce, the first node in rank order
        among all nodes writes why; rank 1 without an interface for the IPs writes
        NoInterfaceForIP while nobody else holds them."""
        held = self.held.get(group.key_ip)
        if held is not None:
            return Announcing(self.node, (held.interface,))
        if group.failure is not None:
            first = election.rank(self.nodes, group.key_ip)[:1] == (self.node,)
            return Announcing(None) if first else None
        if (
            group.ranking[:1] == (self.node,)
            and group.key_ip in self.dataplane.cannot_carry()
            and not self.dataplane.someone_else_holds(group.key_ip)
        ):
            return Announcing(None)
        return None

    def _covered(self, pool: PoolName | None, *, bgp: bool) -> bool:
        """Whether `pool` has an advertisement of the other mode (see the module docstring)."""
        if self.config is None or pool is None:
            return False
        advertisements = self.config.bgp_advertisements if bgp else self.config.l2_advertisements
        return any(not a.pools or pool in a.pools for a in advertisements)

    async def _write_conditions(self) -> None:
        """Every condition this node writes that does not say what it should, among those that
        may have changed since the last pass (every one after a change all of them read),
        patched with CONDITION_WRITERS patches in flight (a config edit may change thousands).
        None while this node still sends routes (BGPSide.still_sending): routes first."""
        recheck, self._recheck = self._recheck, set()
        if self._sending():
            self._defer(recheck)
            return
        groups: Iterable[AnnouncementGroup] = self.l2.groups.values()
        plans: Iterable[ServiceRoutes] = self.bgp_by.values()
        if recheck is not None:
            groups = {g.key_ip: g for k in recheck if (g := self.l2.of_service(k))}.values()
            plans = [p for k in recheck if (p := self.bgp_by.get(k)) is not None]
        due: list[tuple[ServiceKey, Observed, Kind, L2Verdict | None]] = []
        for group in groups:
            silent = group.failure is L2Failure.NO_L2_ADVERTISEMENT and self._covered(
                group.pool, bgp=True
            )
            members = [(k, o) for k in group.services if (o := self.services.get(k)) is not None]
            if silent and all(o.condition is None for _, o in members):
                continue  # nothing to say and nothing to remove: who writes does not matter
            writes = self._writes(group)
            if writes is None:
                continue
            for key, observed in members:
                said = None if silent else l2condition.verdict(group, key, writes.node,
                                                               writes.interfaces)  # fmt: skip
                if not self._shows(observed, said, l2condition.KIND):
                    due.append((key, observed, l2condition.KIND, said))
        if self.bgp is not None:
            for plan in plans:
                seen = self.services.get(plan.service)
                if seen is None or not self.bgp.writes(plan, self.nodes):
                    continue
                pool = plan.pool or pool_of(self.config or Config(), seen.held, plan.ips[0])
                silent = plan.failure is BGPFailure.NO_BGP_ADVERTISEMENT and self._covered(
                    pool, bgp=False
                )
                said = None if silent else self.bgp.verdict(plan, self.node_sessions)
                if not self._shows(seen, said, bgpcondition.KIND):
                    due.append((plan.service, seen, bgpcondition.KIND, said))
        # Only what must change is kept (a pass that finds 10,000 conditions right holds none of
        # them), and each body is made when a writer takes it (None if a watch event showed it
        # written meanwhile): a config edit's thousands of bodies (~0.5 KiB each) held at once
        # were a peak that fragments the heap for good.
        queue = ((k, o, kind, body) for k, o, kind, said in due
                 if (body := self._body(o, said, kind)) is not None)  # fmt: skip
        share, stopped = self.share, False

        async def writer() -> None:
            nonlocal stopped
            for key, observed, kind, body in queue:
                if stopped or self._sending():  # a plan came with routes to send: they go first
                    stopped = True
                    return
                if await self._patch(key, body):
                    # None after a removal()
                    condition = None if body.get("$patch") == "delete" else Shown.of(body, share)
                    if kind is l2condition.KIND:
                        observed.condition = condition
                    else:
                        observed.bgp_condition = condition

        await asyncio.gather(*(writer() for _ in range(min(CONDITION_WRITERS, len(due)))))
        if stopped:
            self._defer(None)

    def _sending(self) -> bool:
        return self.bgp is not None and self.bgp.still_sending()

    def _recheck_also(self, keys: Iterable[ServiceKey] | None) -> None:
        """Add `keys` (None: every Service) to what the next pass checks."""
        if keys is None:
            self._recheck = None
        elif self._recheck is not None:
            self._recheck.update(keys)

    def _check(self, keys: Iterable[ServiceKey] | None) -> None:
        """Conditions to check again, at a pass that is now due: `keys`' or all (None)."""
        self._recheck_also(keys)
        self._conditions_due.set()

    def _defer(self, recheck: set[ServiceKey] | None) -> None:
        """Check `recheck` (None: all) at the next pass, and make sure one comes once
        SENDING_HOLD is over."""
        self._recheck_also(recheck)
        if self._hold_timer is None or self._hold_timer.when() < asyncio.get_running_loop().time():
            self._hold_timer = asyncio.get_running_loop().call_later(
                SENDING_HOLD, self._conditions_due.set
            )

    @staticmethod
    def _shows(observed: Observed, said: L2Verdict | None, kind: Kind) -> bool:
        """Whether the Service's condition of `kind` already says `said` (None: it has none)."""
        previous = observed.condition if kind is l2condition.KIND else observed.bgp_condition
        if said is None:
            return previous is None
        return kind.up_to_date(previous, said, observed.generation)

    def _body(
        self, observed: Observed, said: L2Verdict | None, kind: Kind
    ) -> dict[str, object] | None:
        """The patch that makes the Service's condition of `kind` say `said` (None: remove
        it), or None when it already does."""
        if self._shows(observed, said, kind):
            return None
        previous = observed.condition if kind is l2condition.KIND else observed.bgp_condition
        if said is None:
            return kind.removal()
        return kind.condition(
            said, generation=observed.generation, now=datetime.now(UTC), previous=previous
        )

    async def _patch(self, key: ServiceKey, body: dict[str, object]) -> bool:
        namespace, _, name = key.partition("/")
        try:
            await asyncio.to_thread(self.kube.patch_condition, namespace, name, body)
        except KubeError as err:
            self.metrics.condition_writes.labels(result=str(err.status)).inc()
            log.warning("condition_write_failed service=%s error=%s", key, err)
            return False
        self.metrics.condition_writes.labels(result="ok").inc()
        return True
