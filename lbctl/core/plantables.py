"""Plans kept between changes, so that a change costs what it touches and not O(Services): the
speaker plans again only the Services that changed (their fields or their EndpointSlices) while
the config and the Nodes stay the same, and keeps the rest.

- GroupTable: the L2 plan (lbctl.core.l2plan) as groups by key IP, with where each Service and
  each IP is. A changed Service's old group and every group holding one of its new IPs are
  planned again, with all their members: sharing is transitive, so no other group can change.
- RouteTable: one node's BGP routes (lbctl.core.bgpplan) as each Service's contribution and the
  merged table, in which only the prefixes a changed Service gave or gives are merged again.

Both give exactly what a whole plan of the same view gives (tests/unit/test_plantables.py), in
another order: groups and routes are kept in insertion order, `ordered()` sorts the groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from lbctl.core.adapt import EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.bgpplan import Contribution, merge_attrs
from lbctl.core.bgproutes import IPNetwork, RouteAttrs
from lbctl.core.l2plan import AnnouncementGroup, plan_l2
from lbctl.core.model import Config, IPAddress, PeerName, ServiceKey


class GroupTable:
    """The L2 groups of the last plan, kept and planned again per changed Service."""

    def __init__(self) -> None:
        self.groups: dict[IPAddress, AnnouncementGroup] = {}  # by key IP
        self._of_service: dict[ServiceKey, IPAddress] = {}  # the key IP of each Service's group
        self._of_ip: dict[IPAddress, IPAddress] = {}  # only IPs that are not their group's key
        self._changed: set[IPAddress] = set()  # key IPs of groups added or removed since taken

    def __len__(self) -> int:
        return len(self.groups)

    def ordered(self) -> tuple[AnnouncementGroup, ...]:
        """The groups in plan_l2's order (by their first Service's key)."""
        return tuple(sorted(self.groups.values(), key=lambda g: g.services[0]))

    def take_changed(self) -> set[IPAddress]:
        """The key IPs of the groups added, replaced or removed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def of_ip(self, ip: IPAddress) -> AnnouncementGroup | None:
        return self.groups.get(self._of_ip.get(ip, ip))

    def of_service(self, key: ServiceKey) -> AnnouncementGroup | None:
        key_ip = self._of_service.get(key)
        return None if key_ip is None else self.groups.get(key_ip)

    def plan_all(
        self,
        config: Config,
        services: Iterable[HeldService],
        slices: Mapping[ServiceKey, Sequence[EndpointSliceInfo]],
        nodes: Iterable[NodeInfo],
        *,
        lb_class: str | None = None,
    ) -> None:
        self._changed.update(self.groups)
        self.groups, self._of_service, self._of_ip = {}, {}, {}
        for group in plan_l2(config, services, slices, nodes, lb_class=lb_class):
            self._add(group)

    def replan(
        self,
        config: Config,
        changed: Iterable[ServiceKey],
        held_of: Callable[[ServiceKey], HeldService | None],
        slices: Mapping[ServiceKey, Sequence[EndpointSliceInfo]],
        nodes: Iterable[NodeInfo],
        *,
        lb_class: str | None = None,
    ) -> set[ServiceKey]:
        """Plan again the groups `changed` Services were or are in (`held_of`: a Service's
        fields now, None when it is gone); the Services of the groups planned again."""
        touched: set[IPAddress] = set()
        members: dict[ServiceKey, HeldService] = {}
        for key in changed:
            if (key_ip := self._of_service.get(key)) is not None:
                touched.add(key_ip)
            held = held_of(key)
            if held is None:
                continue
            members[key] = held
            for ip in held.ips:
                if (group := self.of_ip(ip)) is not None:
                    touched.add(group.key_ip)
        affected = set(members)
        for key_ip in touched:
            for key in self._remove(key_ip).services:
                affected.add(key)
                if key not in members and (held := held_of(key)) is not None:
                    members[key] = held
        for group in plan_l2(config, members.values(), slices, nodes, lb_class=lb_class):
            self._add(group)
        return affected

    def _add(self, group: AnnouncementGroup) -> None:
        self._changed.add(group.key_ip)
        self.groups[group.key_ip] = group
        for key in group.services:
            self._of_service[key] = group.key_ip
        for ip in group.ips:
            if ip != group.key_ip:
                self._of_ip[ip] = group.key_ip

    def _remove(self, key_ip: IPAddress) -> AnnouncementGroup:
        group = self.groups.pop(key_ip)
        self._changed.add(key_ip)
        for key in group.services:
            if self._of_service.get(key) == key_ip:
                del self._of_service[key]
        for ip in group.ips:
            if self._of_ip.get(ip) == key_ip:
                del self._of_ip[ip]
        return group


# Who gives a prefix to a peer: one Service (the common case: no set per route) or several.
_Givers = ServiceKey | set[ServiceKey]


class RouteTable:
    """One node's routes: each Service's contribution (bgpplan.NodeView.contribution) and the
    merged table per peer (the announcer's `Desired`), changed one Service at a time."""

    def __init__(self) -> None:
        self.desired: dict[PeerName, dict[IPNetwork, RouteAttrs]] = {}
        self.by_service: dict[ServiceKey, Contribution] = {}
        self.changed: set[PeerName] = set()  # peers whose table changed (the caller clears it)
        self._givers: dict[PeerName, dict[IPNetwork, _Givers]] = {}

    def put(self, key: ServiceKey, contribution: Contribution | None) -> None:
        """Replace `key`'s contribution (None or empty: it gives nothing now)."""
        old = self.by_service.pop(key, None)
        if old == contribution or (not old and not contribution):
            if contribution:
                self.by_service[key] = contribution
            return
        touched: set[tuple[PeerName, IPNetwork]] = set()
        for peer, nets in (old or {}).items():
            givers = self._givers[peer]
            for net in nets:
                now = givers[net]
                if isinstance(now, set):
                    now.discard(key)
                    if len(now) == 1:
                        givers[net] = next(iter(now))
                else:
                    del givers[net]
                touched.add((peer, net))
        if contribution:
            self.by_service[key] = contribution
            for peer, nets in contribution.items():
                givers = self._givers.setdefault(peer, {})
                for net in nets:
                    had = givers.get(net)
                    if had is None:
                        givers[net] = key
                    elif isinstance(had, set):
                        had.add(key)
                    elif had != key:
                        givers[net] = {had, key}
                    touched.add((peer, net))
        for peer, net in touched:
            self._merge(peer, net)

    def _merge(self, peer: PeerName, net: IPNetwork) -> None:
        self.changed.add(peer)
        givers = self._givers.get(peer, {}).get(net)
        if givers is None:
            table = self.desired.get(peer)
            if table is not None:
                table.pop(net, None)
                if not table:
                    del self.desired[peer]
                    self._givers.pop(peer, None)
            return
        attrs: RouteAttrs | None = None
        for key in (givers,) if isinstance(givers, str) else givers:
            given = self.by_service[key][peer][net]
            attrs = given if attrs is None or attrs == given else merge_attrs(attrs, given)
        assert attrs is not None
        self.desired.setdefault(peer, {})[net] = attrs
