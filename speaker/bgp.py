"""The speaker's BGP half, on the control loop: the BGP plan turned into this node's sessions and
routes for the announcer (speaker.announcers.bgp), the announcer's reports turned into metrics,
the node's published session states (the `lbctl.io/bgp-sessions` Node annotation) and the
`lbctl.io/AnnouncedBGP` conditions, which speaker.agent writes.

Passwords: a peer's inline password (MetalLB's legacy format) or its Secret, read through
speaker.kube at most every SECRET_TTL seconds; a Secret that cannot be read leaves that peer
out (its session is not started) and says which peer and which Secret, once per cause, at ERROR.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from lbctl.core import bgpcondition, bgpplan, election
from lbctl.core.adapt import NodeInfo
from lbctl.core.bgpcondition import Sessions, SessionState
from lbctl.core.bgpplan import NodeView, ServiceRoutes, sessions_for
from lbctl.core.bgproutes import Desired, IPNetwork, RouteAttrs, Session, Statuses
from lbctl.core.l2condition import L2Verdict
from lbctl.core.model import BGPPeer, Config, NodeName, PeerName, Secret, SecretRef, ServiceKey
from lbctl.core.plantables import RouteTable
from speaker.kube import Kube, KubeError
from speaker.metrics import Metrics

log = logging.getLogger("lbctl.speaker.bgp")
SECRET_TTL = 30.0  # s a Secret's password is used before it is read again
SENDING_HOLD = 10.0  # s the BGP conditions wait at most while this node sends its routes


class Announcer(Protocol):
    """What the speaker needs of a BGP announcer (speaker.announcers.bgp.BGPAnnouncer)."""

    def start(self) -> None: ...
    def configure(self, sessions: Mapping[PeerName, Session]) -> None: ...
    def sync(self, desired: Desired) -> None: ...
    def statuses(self) -> Statuses: ...
    def close(self) -> None: ...


class BGPSide:
    """Sessions and routes of one node; runs on the control loop (kopf's)."""

    def __init__(
        self,
        node: NodeName,
        kube: Kube,
        metrics: Metrics,
        announcer: Announcer,
        on_change: Callable[[bool], None],
    ) -> None:
        self.node = node
        self.kube = kube
        self.metrics = metrics
        self.announcer = announcer
        self.on_change = on_change
        self.table = RouteTable()  # this node's routes, per Service and merged per peer
        self._handed: dict[PeerName, dict[IPNetwork, RouteAttrs]] = {}  # the announcer's copy
        self.statuses: Statuses = {}
        self.published: str | None = None  # the annotation value last written
        self.peers: dict[PeerName, BGPPeer] = {}
        self._secrets: dict[SecretRef, tuple[float, Secret | None]] = {}
        self._said: set[str] = set()  # secret problems already logged
        self._loop: asyncio.AbstractEventLoop | None = None
        self._view: NodeView | None = None  # the config and node the table is for
        # Services whose condition said "sending" (routes not all acknowledged): checked again
        # when the announcer acknowledges more (the caller clears it)
        self.sending: set[ServiceKey] = set()
        self._sending_since: float | None = None  # when still_sending() first saw routes unsent
        self._version = 0  # of what still_sending() reads: the handed tables and the statuses
        self._busy = (-1, False)  # still_sending()'s comparison, at a version

    # -- plan -> announcer ---------------------------------------------------------------------

    async def update(
        self,
        config: Config,
        plans: Mapping[ServiceKey, ServiceRoutes],
        me: NodeInfo | None,
        changed: Iterable[ServiceKey] | None = None,
    ) -> None:
        """Hand the announcer this node's sessions and routes (it diffs; unchanged is a no-op).
        `changed`: the Services whose plans changed since the last update (None: any)."""
        self._loop = asyncio.get_running_loop()
        self.peers = sessions_for(config, me)
        sessions: dict[PeerName, Session] = {}
        for name, peer in self.peers.items():
            session = await self._session(peer, me)
            if session is not None:
                sessions[name] = session
        self._routes(config, plans, me, changed)
        # A peer's table is copied only when it changed: the announcer skips a table it has
        # converged (the same object), and reads it on its own thread while this one edits.
        table = self.table
        renewed = table.changed | (self._handed.keys() - table.desired.keys())
        for name in renewed:
            if name in table.desired:
                self._handed[name] = dict(table.desired[name])
            else:
                self._handed.pop(name, None)
        self._version += bool(renewed)
        table.changed.clear()
        desired = {name: routes for name, routes in self._handed.items() if name in sessions}
        self.announcer.configure(sessions)
        self.announcer.sync(desired)
        for name in self.peers:
            self.metrics.bgp_desired.labels(peer=name).set(len(desired.get(name, {})))

    def _routes(
        self,
        config: Config,
        plans: Mapping[ServiceKey, ServiceRoutes],
        me: NodeInfo | None,
        changed: Iterable[ServiceKey] | None,
    ) -> None:
        """The route table, each changed Service's contribution replaced; all of them again
        when the config or this node changed (a NodeView holds both)."""
        if me is None:
            self._view, self.table = None, RouteTable()
            return
        view = self._view
        if (
            view is None
            or view.node != me
            or (
                view.config is not config
                and bgpplan.config_read(view.config) != bgpplan.config_read(config)
            )
        ):
            view = self._view = NodeView(config, me)
            self.table, changed = RouteTable(), None
        table = self.table
        if changed is None:
            changed = set(plans) | set(table.by_service)
        for key in changed:
            plan = plans.get(key)
            table.put(key, None if plan is None else view.contribution(plan))

    async def _session(self, peer: BGPPeer, me: NodeInfo | None) -> Session | None:
        if me is None:
            return None
        mine = [ip for ip in me.internal_ips if ip.version == peer.address.version]
        v4 = [ip for ip in me.internal_ips if isinstance(ip, ipaddress.IPv4Address)]
        router_id = peer.router_id or (v4[0] if v4 else None)
        if router_id is None:
            self._say(f"peer {peer.name}: routerID is not set and node {self.node} has no IPv4 "
                      "InternalIP to take it from; its session is not started")  # fmt: skip
            return None
        local = peer.source_address or (mine[0] if mine else None)
        password = peer.password
        if peer.password_secret is not None:
            password = await self._password(peer, peer.password_secret)
            if password is None:
                return None
        return Session(peer, router_id, local, password)

    async def _password(self, peer: BGPPeer, ref: SecretRef) -> Secret | None:
        now = time.monotonic()
        cached = self._secrets.get(ref)
        if cached is not None and now - cached[0] < SECRET_TTL:
            return cached[1]
        where = f"peer {peer.name}: passwordSecret {ref.namespace}/{ref.name} key {ref.key}"
        try:
            value = await asyncio.to_thread(self.kube.read_secret_key, ref.namespace, ref.name,
                                            ref.key)  # fmt: skip
        except KubeError as err:
            self._say(f"{where}: cannot be read ({err}); the session is not started")
            value = None
        else:
            if value is None:
                self._say(f"{where}: the key is missing; the session is not started")
        password = Secret(value) if value is not None else None
        self._secrets[ref] = (now, password)
        return password

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.error("bgp_peer_unusable %s", message)

    # -- announcer -> metrics, annotation, conditions ------------------------------------------

    def on_status(self, statuses: Statuses) -> None:
        """The announcer's statuses changed (called on the announcer's thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._status_changed, statuses)

    def _status_changed(self, statuses: Statuses) -> None:
        before, self.statuses = self.statuses, statuses
        self._version += 1
        # Anything but more routes acknowledged may change any Service's condition; more routes
        # acknowledged, only those of the Services whose condition said "sending".
        states = before.keys() != statuses.keys() or any(
            (s.established, s.error) != (was.established, was.error) or not was.sent <= s.sent
            for p, s in statuses.items()
            if (was := before[p]) is not s
        )
        for peer, status in statuses.items():
            self.metrics.bgp_session_up.labels(peer=peer).set(1 if status.established else 0)
            self.metrics.bgp_announced.labels(peer=peer).set(len(status.sent))
        self.on_change(states)

    def own_sessions(self) -> Sessions:
        return {
            peer: SessionState.ESTABLISHED
            if (s := self.statuses.get(peer)) is not None and s.established
            else SessionState.DOWN
            for peer in self.peers
        }

    async def publish(self) -> None:
        """Write this node's session states on its Node when they changed."""
        value = bgpcondition.encode_sessions(self.own_sessions())
        if value == self.published or (self.published is None and not self.peers):
            return  # unchanged, or a node without BGP peers that never published: no write
        try:
            await asyncio.to_thread(self.kube.annotate_node, bgpcondition.SESSIONS_ANNOTATION,
                                    value)  # fmt: skip
            self.published = value
        except KubeError as err:
            log.warning("sessions_annotation_failed node=%s error=%s", self.node, err)

    def still_sending(self) -> bool:
        """Whether the announcer has not yet sent (or withdrawn) on an Established session the
        routes last handed to it, for at most SENDING_HOLD s from when this was first seen.
        Meanwhile no condition is written (speaker.conditions): a config edit's thousands of
        routes are not sent while thousands of condition patches, and their echoes through
        every watcher, load the same cores; and each BGP condition is written once,
        "announced", rather than "sending" first. Cheap to ask again: the comparison is made
        once per change of the tables or the statuses."""
        if self._busy[0] != self._version:
            busy = any(
                (status := self.statuses.get(peer)) is not None
                and status.established
                and table.keys() != status.sent
                for peer, table in self._handed.items()
            )
            self._busy = (self._version, busy)
        busy = self._busy[1]
        now = time.monotonic()
        if not busy:
            self._sending_since = None
            return False
        if self._sending_since is None:
            self._sending_since = now
        return now - self._sending_since < SENDING_HOLD

    def writes(self, plan: ServiceRoutes, nodes: Iterable[NodeName]) -> bool:
        """Whether this node writes `plan`'s condition: the first announcing node in rank
        order; when nobody announces, the first of all nodes."""
        if plan.ranking:
            return plan.ranking[0] == self.node
        return election.rank(nodes, plan.ips[0])[:1] == (self.node,)

    def verdict(self, plan: ServiceRoutes, published: Mapping[NodeName, Sessions]) -> L2Verdict:
        sessions = {**published, self.node: self.own_sessions()}
        return bgpcondition.verdict(plan, sessions, own_node=self.node, own_sent=self._sent(plan))

    def _sent(self, plan: ServiceRoutes) -> bool:
        """All of this node's routes for the Service acknowledged on its Established sessions."""
        for peer, nets in self.table.by_service.get(plan.service, {}).items():
            status = self.statuses.get(peer)
            if status is not None and status.established and not nets.keys() <= status.sent:
                self.sending.add(plan.service)
                return False
        return True

    def close(self) -> None:
        self.announcer.close()
