"""The speaker's control loop: indexes of parsed fields fed by kopf's watches (Services,
EndpointSlices, Nodes, the pool ConfigMap), the planners run on every change, the L2 plan handed
to the data plane and the BGP plan to the BGP side (speaker.bgp), and the `lbctl.io/AnnouncedL2`
and `lbctl.io/AnnouncedBGP` conditions written when they change (how: speaker.conditions,
the Agent's base class). Run by speaker.runner; kopf handlers (speaker.handlers) call the `on_*`
methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lbctl.configmap import load_configmap
from lbctl.core import bgpcondition, bgpplan, l2condition, l2plan
from lbctl.core.adapt import (
    HeldService,
    NodeInfo,
    adapt_endpointslice,
    adapt_held_service,
    adapt_node,
    key_of,
)
from lbctl.core.bgpcondition import Sessions
from lbctl.core.bgpplan import ServiceRoutes, plan_bgp
from lbctl.core.liveness_types import GroupView
from lbctl.core.model import Config, ConfigError, IPAddress, NodeName, ServiceKey
from lbctl.core.plantables import GroupTable
from speaker.bgp import Announcer as BGPAnnouncer
from speaker.bgp import BGPSide
from speaker.conditions import ConditionWriter, Observed
from speaker.dataplane import DataPlane
from speaker.dataplane_types import Held, Plan
from speaker.indexes import Sharing, SliceIndex
from speaker.kube import Kube, KubeError
from speaker.memory import Trimmer
from speaker.metrics import Metrics

log = logging.getLogger("lbctl.speaker")
FRESH_EVERY = 2.0  # s between freshness probes (GET /version)
FRESH_FOR = 30.0  # s the API view stays fresh after a probe answered (an idle watch proves nothing)
SETTLE = 0.005  # s to gather a burst of watch events into one plan
GATHER_MAX = 1.0  # s a plan or conditions pass waits at most after a slow one (see _paced)
FULL_PASS_EVERY = 300.0  # s between conditions passes over every Service (a safety net)
LOG_SLOW = 0.5  # s a plan or conditions pass takes that gets a log line


class Agent(ConditionWriter):
    """Indexes, planner and condition writer of one speaker; runs on kopf's loop."""

    def __init__(
        self,
        node: NodeName,
        kube: Kube,
        dataplane: DataPlane,
        metrics: Metrics,
        *,
        config_ref: tuple[str, str],
        lb_class: str | None = None,
        bgp: BGPAnnouncer | None = None,
    ) -> None:
        self.node = node
        self.kube = kube
        self.dataplane = dataplane
        self.metrics = metrics
        self.config_ref = config_ref
        self.lb_class = lb_class
        self.services: dict[ServiceKey, Observed] = {}
        self.slices = SliceIndex()
        self.share = Sharing()  # one copy of the endpoints, tuples and times records hold alike
        # Incremental plans: Services whose plans are stale, and the version of what every plan
        # reads (config, Nodes); a plan with the same version replans only the stale Services.
        self._stale: set[ServiceKey] = set()
        # (what plan_l2 reads, what plan_bgp reads): a config edit may change one of them only
        self._world = [0, 0]
        self._planned_world = [-1, -1]
        self.nodes: dict[NodeName, NodeInfo] = {}
        self.config: Config | None = None
        self.l2 = GroupTable()  # the L2 plan
        self.bgp_by: dict[ServiceKey, ServiceRoutes] = {}  # the BGP plan, per Service
        # The data plane's share of the L2 plan (groups with a ranking), kept per group
        self._dp_groups: dict[IPAddress, GroupView] = {}
        self._dp_interfaces: dict[IPAddress, tuple[str, ...]] = {}
        self._recheck: set[ServiceKey] | None = None  # conditions to check (None: all)
        self.bgp = None
        if bgp is not None:
            self.bgp = BGPSide(node, kube, metrics, bgp, self._sessions_changed)
        self.node_sessions: dict[NodeName, Sessions] = {}  # each node's published BGP sessions
        self.held: dict[IPAddress, Held] = {}
        self.fresh_until = 0.0
        self._dirty = asyncio.Event()
        self._conditions_due = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.trimmer = Trimmer()  # gives freed heap back after a burst of watch events

    # -- watch events (kopf handlers) ---------------------------------------------------------

    # A Service or EndpointSlice event replans only when it changes what the planners read; one
    # that changes only conditions or generations (every condition write by any speaker comes
    # back as a Service event) re-checks the conditions alone: a replan is O(Services).

    def on_service(self, event: str | None, body: Mapping[str, Any]) -> None:
        self.trimmer.note()
        key = key_of(body)
        old = self.services.get(key)
        if event == "DELETED":
            self.services.pop(key, None)
            self._stale.add(key)
            self._dirty.set()
            return
        meta, status, share = body.get("metadata") or {}, body.get("status"), self.share
        held = adapt_held_service(body)
        l2, bgp = l2condition.find(status, share), bgpcondition.find(status, share)
        if old is not None:  # keep the records an event repeats (most events change one field)
            held = old.held if old.held == held else held
            l2 = old.condition if old.condition == l2 else l2
            bgp = old.bgp_condition if old.bgp_condition == bgp else bgp
        observed = Observed(held, int(meta.get("generation") or 0), l2, bgp)
        self.services[key] = observed
        if old is None or old.held != observed.held:
            self._stale.add(key)
            self._dirty.set()
        else:
            self._check((key,))

    def on_slice(self, event: str | None, body: Mapping[str, Any]) -> None:
        self.trimmer.note()
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        info = None
        if event != "DELETED":  # no endpoint addresses: no announcing decision reads them
            info = adapt_endpointslice(body, addresses=False, share=self.share)
        old = self.slices.put(namespace, name, info)
        if old == info:
            return
        self._stale.update(i.service for i in (old, info) if i is not None and i.service)
        self._dirty.set()

    def on_node(self, event: str | None, body: Mapping[str, Any]) -> None:
        info = adapt_node(body)
        if event == "DELETED":
            self.nodes.pop(info.name, None)
            self.node_sessions.pop(info.name, None)
            self._new_world(l2=True, bgp=True)
            return
        # A Node event that changes nothing the planners read (the kubelets' status heartbeats,
        # every 10 s per node) does not replan: a replan is O(Services).
        sessions = bgpcondition.sessions_of(body)
        if self.nodes.get(info.name) == info:
            if self.node_sessions.get(info.name) != sessions:
                self.node_sessions[info.name] = sessions
                self._check(None)
            return
        self.nodes[info.name] = info
        self.node_sessions[info.name] = sessions
        self._new_world(l2=True, bgp=True)

    def on_config(self, event: str | None, body: Mapping[str, Any]) -> None:
        """A new config replaces the last good one; a bad one keeps it (and says why)."""
        if event == "DELETED":
            log.warning("config_deleted configmap=%s/%s keeping=last", *self.config_ref)
            return
        try:
            config = load_configmap(body).config
            self.metrics.config_stale.set(0)
        except ConfigError as err:
            self.metrics.config_stale.set(1)
            log.error("config_invalid configmap=%s/%s error=%s", *self.config_ref, err)
            return
        old, self.config = self.config, config
        if old == config:
            return  # the same config again (a ConfigMap edit elsewhere, a re-list)
        log.info("config_loaded configmap=%s/%s", *self.config_ref)
        # a planner whose part of the config is the same keeps its plan (an edit of the BGP
        # advertisements does not plan 10,000 L2 groups again); every condition is checked
        # again (what one mode says depends on the other's advertisements)
        self._new_world(
            l2=old is None or l2plan.config_read(old) != l2plan.config_read(config),
            bgp=old is None or bgpplan.config_read(old) != bgpplan.config_read(config),
        )
        self._check(None)

    def _new_world(self, *, l2: bool, bgp: bool) -> None:
        """What every L2 (`l2`) or BGP plan reads changed: the next one plans everything."""
        self._world = [self._world[0] + l2, self._world[1] + bgp]
        self._dirty.set()

    def on_held(self, held: dict[IPAddress, Held], changed: frozenset[IPAddress] | None) -> None:
        """The data plane's holdings changed, in the groups `changed` keys (None: any group's
        conditions may have; called on the data-plane thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._held_changed, held, changed)

    def _sessions_changed(self, states: bool) -> None:
        """The BGP announcer's report changed: a session's state (`states`: every BGP condition
        may change) or only the routes acknowledged (those of Services still sending)."""
        assert self.bgp is not None
        self._recheck_also(None if states else self.bgp.sending)
        self.bgp.sending.clear()
        self._dirty.set()  # the plan publishes this node's session states

    def _held_changed(
        self, held: dict[IPAddress, Held], changed: frozenset[IPAddress] | None
    ) -> None:
        self.held = held
        self.metrics.set_announced(self.node, held)
        if changed is None:
            self._recheck_also(None)
        else:  # the Services of those groups: a full pass is O(Services), ~0.5 s at 10,000
            groups = (self.l2.of_ip(key) for key in changed)
            self._recheck_also(k for g in groups if g is not None for k in g.services)
        self._dirty.set()

    # -- loops ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Plan on every change and keep the API freshness; until cancelled."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._plans())
            group.create_task(self._conditions())
            group.create_task(self._freshness())
            group.create_task(self.trimmer.run())

    async def _plans(self) -> None:
        def failed() -> None:
            self._planned_world = [-1, -1]  # the next plan starts from scratch

        await self._paced("plan", self._dirty, self.replan, failed)

    async def _conditions(self) -> None:
        """Condition writes on their own task: a plan (and so the data plane and the BGP routes)
        never waits behind the API writes of the plan before it."""

        def failed() -> None:
            self._recheck = None  # the next pass checks every Service

        async def every() -> None:
            while True:
                await asyncio.sleep(FULL_PASS_EVERY)
                self._check(None)

        async with asyncio.TaskGroup() as group:
            group.create_task(every())
            await self._paced("conditions", self._conditions_due, self._write_conditions, failed)

    async def _paced(
        self,
        what: str,
        due: asyncio.Event,
        work: Callable[[], Awaitable[None]],
        failed: Callable[[], None],
    ) -> None:
        """Run `work` whenever `due` is set, gathering events meanwhile: after a pass that took
        t seconds the next one starts t later (at most GATHER_MAX), so a burst of watch events
        costs one pass per batch, and passes take at most about half of the loop's time."""
        ready_at = 0.0
        while True:
            await due.wait()
            await asyncio.sleep(max(SETTLE, ready_at - time.monotonic()))
            due.clear()
            start = time.monotonic()
            try:
                await work()
            except Exception:  # the loop boundary: log and keep going
                log.exception("%s_failed node=%s", what, self.node)
                failed()
            end = time.monotonic()
            ready_at = end + min(end - start, GATHER_MAX)
            if end - start >= LOG_SLOW:
                log.info("%s_slow seconds=%.2f services=%d", what, end - start, len(self.services))

    async def _freshness(self) -> None:
        while True:
            ok = await asyncio.to_thread(self.kube.api_reachable)
            now = time.monotonic()
            if ok:
                self.fresh_until = now + FRESH_FOR
                self.dataplane.api_answered(now)
            fresh = now < self.fresh_until
            self.metrics.api_fresh.set(1 if fresh else 0)
            self.dataplane.set_fresh(fresh)
            await asyncio.sleep(FRESH_EVERY)

    async def replan(self) -> None:
        """Plan L2 and BGP. Incremental: while the config and the Nodes are the ones of the
        last plan, only the Services that changed since (their own fields or their slices) are
        planned again (with, for L2, the Services sharing an IP with them), and the rest of the
        last plan is kept; plans are pure functions of those inputs, so the result is the one a
        whole plan would give (tests/unit/test_speaker_incremental.py)."""
        if self.config is None:
            return
        config, nodes, lb_class = self.config, self.nodes.values(), self.lb_class
        whole_l2, whole = (p != w for p, w in zip(self._planned_world, self._world, strict=True))
        stale, self._stale = self._stale, set()
        self._planned_world = list(self._world)
        services = [o.held for o in self.services.values()] if whole_l2 or whole else []
        if whole_l2:
            self.l2.plan_all(config, services, self.slices, nodes, lb_class=lb_class)
            self._recheck_also(None)
        else:
            affected = self.l2.replan(config, stale, self._held_of, self.slices, nodes,
                                      lb_class=lb_class)  # fmt: skip
            self._recheck_also(affected)
        self._update_dataplane(whole_l2)
        if self.bgp is not None:
            if whole:
                plans = plan_bgp(config, services, self.slices, nodes, lb_class=lb_class)
                self.bgp_by = {plan.service: plan for plan in plans}
            else:
                for key in stale:
                    self.bgp_by.pop(key, None)
                changed = [h for k in stale if (h := self._held_of(k)) is not None]
                for plan in plan_bgp(config, changed, self.slices, nodes, lb_class=lb_class):
                    self.bgp_by[plan.service] = plan
                self._recheck_also(stale)
            me = self.nodes.get(self.node)
            await self.bgp.update(config, self.bgp_by, me, None if whole else stale)
            await self.bgp.publish()
        self._conditions_due.set()

    def _held_of(self, key: ServiceKey) -> HeldService | None:
        observed = self.services.get(key)
        return None if observed is None else observed.held

    def _update_dataplane(self, whole: bool) -> None:
        """Hand the data plane the groups this plan ranks somebody for, when they changed."""
        changed = self.l2.take_changed()
        if whole:
            self._dp_groups, self._dp_interfaces = {}, {}
            changed = set(self.l2.groups)
        elif not changed:
            return
        for key_ip in changed:
            group = self.l2.groups.get(key_ip)
            self._dp_groups.pop(key_ip, None)
            self._dp_interfaces.pop(key_ip, None)
            if group is None or not group.ranking:
                continue
            self._dp_groups[key_ip] = group  # the planner's own (a GroupView), not a copy
            # () (the interface whose subnet holds the VIP) is the data plane's default: not kept
            if interfaces := group.interfaces_for(self.node):
                self._dp_interfaces[key_ip] = interfaces
        addresses = {
            name: info.internal_ips[0] for name, info in self.nodes.items() if info.internal_ips
        }
        groups = tuple(self._dp_groups.values())
        diff = None if whole else {k: self._dp_groups.get(k) for k in changed}
        self.dataplane.update(Plan(groups, dict(self._dp_interfaces), addresses, diff))

    # -- Events --------------------------------------------------------------------------------

    async def post_event(self, ip: IPAddress, type_: str, reason: str, message: str) -> None:
        """An Event on every Service holding `ip`."""
        group = self.l2.of_ip(ip)
        if group is not None:
            for key in group.services:
                namespace, _, name = key.partition("/")
                post = functools.partial(
                    self.kube.post_event, namespace, name,
                    type_=type_, reason=reason, message=message,
                )  # fmt: skip
                with contextlib.suppress(KubeError):
                    await asyncio.to_thread(post)
