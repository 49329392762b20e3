"""The BGP planner: for every Service, which nodes announce its IPs to which peers, and why not
the others; then, for one node, the sessions it holds and the routes it sends (lbctl.core.
bgproutes.Desired). Called by the speaker with its whole view on every change.

Unlike L2 there is no owner: every eligible node announces, and the routers spread traffic over
them (ECMP); a dead node is noticed by its BGP session, so no probing is needed. The rules
(metallb-compat.md plus issue 10), shared with the L2 planner where they are the same
(lbctl.core.eligibility):

- Services: type LoadBalancer, with exactly the handled loadBalancerClass, holding an ingress IP.
  Each Service is planned on its own; an IP several Services share is announced from a node when
  any of them is announced there (sharing Services agree on externalTrafficPolicy and, for
  Local, on their pods: the sharing rule).
- Pool: the pool whose ranges hold the Service's first IP (eligibility.pool_of). No pool, or no
  BGP advertisement covering it (those listing the pool, or listing none): NoBGPAdvertisement.
- Endpoints: a ready (or failing that serving) endpoint somewhere, else NoReadyEndpoints.
- Nodes: the node rules (eligibility.node_skip); then an advertisement of the pool must select
  the node (its nodeSelectors) and bring at least one peer for it (NodeNotSelected, NoBGPPeer);
  with externalTrafficPolicy Local, a ready local endpoint (NoLocalEndpoint). Nobody left:
  NoEligibleNode.
- Peers of a node: the configured peers whose nodeSelectors select it (empty: every node), in
  the IP's address family (an IPv4 prefix goes to IPv4 peers only, an IPv6 prefix to IPv6 peers:
  next-hop self must be an address of the session's family). An advertisement listing peers
  limits its routes to those.
- Routes: per advertisement, the IP's prefix at its aggregation length (aggregationLength for
  IPv4, aggregationLengthV6 for IPv6: one aggregate is announced while any Service needs it),
  with its communities and local-pref (local-pref on iBGP sessions only, as BGP defines it).
  Several advertisements giving one prefix to one peer merge: communities are the sorted union,
  local-pref the highest.
- Ranking: the announcing nodes in election.rank order of the first IP; the first writes the
  Service's condition.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from lbctl.core import election
from lbctl.core.adapt import EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.bgproutes import Desired, IPNetwork, RouteAttrs
from lbctl.core.eligibility import empty_mapping, local_nodes, node_skip, pool_of, serves
from lbctl.core.model import (
    BGPAdvertisement,
    BGPPeer,
    Config,
    IPAddress,
    NodeName,
    PeerName,
    PoolName,
    ServiceKey,
    TrafficPolicy,
    any_selector_matches,
)
from lbctl.core.reasons import BGPFailure, NodeSkip


@dataclass(frozen=True, slots=True)
class ServiceRoutes:
    """One Service's BGP plan: who announces its IPs to whom, or why nobody does."""

    service: ServiceKey
    ips: tuple[IPAddress, ...]
    pool: PoolName | None
    advertisements: tuple[str, ...]  # names of the BGP advertisements covering the pool
    ranking: tuple[NodeName, ...]  # announcing nodes in rank order; empty iff failure
    failure: BGPFailure | None
    # For each announcing node, the peers it sends at least one of the IPs to, sorted.
    peers: Mapping[NodeName, tuple[PeerName, ...]] = field(
        default_factory=empty_mapping, hash=False
    )
    # Every node known but not announcing, and why; empty when the Service failed before nodes
    # were looked at (NoBGPAdvertisement, NoReadyEndpoints).
    skipped: Mapping[NodeName, NodeSkip] = field(default_factory=empty_mapping, hash=False)
    pools: tuple[PoolName | None, ...] = ()  # the pool of each IP, in ips order

    @property
    def writer(self) -> NodeName | None:
        """The node that writes the condition while somebody announces."""
        return self.ranking[0] if self.ranking else None


def config_read(config: Config) -> tuple[object, ...]:
    """What of the config plan_bgp and NodeView read: two configs equal in these give the same
    plans and routes."""
    return (config.pools, config.bgp_advertisements, config.peers)


def advertisements_for(config: Config, pool: PoolName | None) -> tuple[BGPAdvertisement, ...]:
    """The BGP advertisements covering `pool` (those listing no pool cover every pool)."""
    if pool is None:
        return ()
    return tuple(a for a in config.bgp_advertisements if not a.pools or pool in a.pools)


def peers_for(config: Config, node: NodeInfo) -> tuple[BGPPeer, ...]:
    """The peers `node` holds a session with: those whose nodeSelectors select it. Sessions do
    not depend on the node rules: a NotReady node keeps its sessions and withdraws its routes."""
    labels = node.label_map
    return tuple(p for p in config.peers if any_selector_matches(p.node_selectors, labels))


def prefix(ip: IPAddress, advertisement: BGPAdvertisement) -> IPNetwork:
    """The prefix `advertisement` announces for `ip`, at the advertisement's aggregation length.
    Built from the address's int: from the address object, ipaddress goes through its text."""
    if ip.version == 4:
        return ipaddress.IPv4Network((int(ip), advertisement.aggregation_length), strict=False)
    return ipaddress.IPv6Network((int(ip), advertisement.aggregation_length_v6), strict=False)


@dataclass(frozen=True, slots=True)
class _Reach:
    """What one pool's advertisements allow per family, computed once per plan and shared."""

    advertisements: tuple[BGPAdvertisement, ...]
    # node -> the peers it would send to (any advertisement, this family), sorted
    peers: Mapping[NodeName, tuple[PeerName, ...]]
    skipped: Mapping[NodeName, NodeSkip]


def _advertised_peers(
    advertisement: BGPAdvertisement, node_peers: Sequence[BGPPeer], version: int
) -> list[BGPPeer]:
    return [
        p
        for p in node_peers
        if p.address.version == version
        and (not advertisement.peers or p.name in advertisement.peers)
    ]


def _reach(
    advertisements: tuple[BGPAdvertisement, ...],
    nodes: Sequence[NodeInfo],
    node_peers: Mapping[NodeName, tuple[BGPPeer, ...]],
    version: int,
) -> _Reach:
    peers: dict[NodeName, tuple[PeerName, ...]] = {}
    skipped: dict[NodeName, NodeSkip] = {}
    for node in nodes:
        labels = node.label_map
        selecting = [a for a in advertisements if any_selector_matches(a.node_selectors, labels)]
        reason = node_skip(node) if selecting else NodeSkip.NODE_NOT_SELECTED
        names = sorted(
            {
                p.name
                for a in selecting
                for p in _advertised_peers(a, node_peers.get(node.name, ()), version)
            }
        )
        if reason is None and not names:
            reason = NodeSkip.NO_BGP_PEER
        if reason is None:
            peers[node.name] = tuple(names)
        else:
            skipped[node.name] = reason
    return _Reach(advertisements, MappingProxyType(peers), MappingProxyType(skipped))


def _plan_service(
    service: HeldService,
    pools: tuple[PoolName | None, ...],
    reaches: Sequence[_Reach],
    slices: Sequence[EndpointSliceInfo],
    shared: dict[tuple[object, ...], tuple[object, ...]],
) -> ServiceRoutes:
    """`pools` and `reaches` hold the pool and the _Reach (its pool and family) of each IP of
    the Service, in ips order: eligibility goes by the first; a node's peers are those of all
    its IPs' families. `shared`: the plan's equal rankings as one tuple."""
    key_ip, reach, pool = service.ips[0], reaches[0], pools[0]
    names = tuple(a.name for a in reach.advertisements)
    failure: BGPFailure | None = None
    ranking: tuple[NodeName, ...] = ()
    peers: Mapping[NodeName, tuple[PeerName, ...]] = empty_mapping()
    skipped: Mapping[NodeName, NodeSkip] = empty_mapping()
    if not reach.advertisements:
        failure = BGPFailure.NO_BGP_ADVERTISEMENT
    elif not serves(slices):
        failure = BGPFailure.NO_READY_ENDPOINTS
    else:
        candidates, skipped = set(reach.peers), reach.skipped
        if service.traffic_policy is TrafficPolicy.LOCAL:
            local = local_nodes(slices, candidates)
            if lost := candidates - local:
                lost_skips = dict.fromkeys(sorted(lost), NodeSkip.NO_LOCAL_ENDPOINT)
                skipped = MappingProxyType({**skipped, **lost_skips})
                candidates = local
        ranking = election.rank(candidates, key_ip)
        ranking = shared.setdefault(ranking, ranking)  # type: ignore[assignment]
        if len(reaches) == 1:
            peers = MappingProxyType({n: reach.peers[n] for n in ranking})
        else:
            peers = MappingProxyType(
                {
                    n: tuple(sorted({p for r in reaches for p in r.peers.get(n, ())}))
                    for n in ranking
                }
            )
        failure = None if ranking else BGPFailure.NO_ELIGIBLE_NODE
    return ServiceRoutes(
        service.key, service.ips, pool, names, ranking, failure, peers, skipped, pools
    )


def plan_bgp(
    config: Config,
    services: Iterable[HeldService],
    slices: Mapping[ServiceKey, Sequence[EndpointSliceInfo]],
    nodes: Iterable[NodeInfo],
    *,
    lb_class: str | None = None,
) -> tuple[ServiceRoutes, ...]:
    """Every Service to announce over BGP, sorted by key, with its announcing nodes or why none.

    `slices` holds each Service's EndpointSlices; `nodes` every Node known, with unique names.
    """
    wanted = {s.key: s for s in services if s.load_balancer and s.lb_class == lb_class and s.ips}
    known = sorted((n for n in nodes if n.name), key=lambda n: n.name)
    node_peers = {n.name: peers_for(config, n) for n in known}
    reaches: dict[tuple[PoolName | None, int], _Reach] = {}
    # Equal pool tuples and rankings as one object each: few pools and nodes give few.
    shared: dict[tuple[object, ...], tuple[object, ...]] = {}
    plans = []
    for key in sorted(wanted):
        service = wanted[key]
        pools = tuple(pool_of(config, service, ip) for ip in service.ips)
        pools = shared.setdefault(pools, pools)  # type: ignore[assignment]
        mine = []
        for ip, pool in zip(service.ips, pools, strict=True):
            slot = (pool, ip.version)
            if slot not in reaches:
                covering = advertisements_for(config, pool)
                reaches[slot] = _reach(covering, known, node_peers, ip.version)
            mine.append(reaches[slot])
        plans.append(_plan_service(service, pools, mine, slices.get(key, ()), shared))
    return tuple(plans)


def sessions_for(config: Config, node: NodeInfo | None) -> dict[PeerName, BGPPeer]:
    """The peers this node holds sessions with, by name (none while the node is unknown)."""
    return {} if node is None else {p.name: p for p in peers_for(config, node)}


@dataclass(frozen=True, slots=True)
class NodeRoutes:
    """What one node sends: per peer the prefixes with their attributes (the announcer's input),
    and per Service the prefixes it put in, per peer (for the condition writer)."""

    desired: Desired
    by_service: Mapping[ServiceKey, Mapping[PeerName, frozenset[IPNetwork]]]


# One Service's share of a node's routes: per peer, its prefixes with their attributes.
Contribution = Mapping[PeerName, Mapping[IPNetwork, RouteAttrs]]


class NodeView:
    """One node's side of routes_for under one config: `contribution(plan)` is one Service's
    share, `merge` adds the shares up. A caller that keeps each plan's contribution while the
    plan, the config and the node stay the same recomputes only what changed (the speaker)."""

    def __init__(self, config: Config, node: NodeInfo) -> None:
        self.config = config
        self.node = node
        self._peers = peers_for(config, node)
        self._labels = node.label_map
        self._selecting: dict[PoolName | None, list[BGPAdvertisement]] = {}

    def contribution(self, plan: ServiceRoutes) -> Contribution:
        if self.node.name not in plan.peers:
            return {}
        mine: dict[PeerName, dict[IPNetwork, RouteAttrs]] = {}
        for ip, pool in zip(plan.ips, plan.pools, strict=True):
            if pool not in self._selecting:
                covering = advertisements_for(self.config, pool)
                self._selecting[pool] = [
                    a for a in covering if any_selector_matches(a.node_selectors, self._labels)
                ]
            for adv in self._selecting[pool]:
                net = prefix(ip, adv)
                for peer in _advertised_peers(adv, self._peers, ip.version):
                    attrs = RouteAttrs(
                        adv.local_pref if peer.is_ibgp else None, tuple(sorted(adv.communities))
                    )
                    table = mine.setdefault(peer.name, {})
                    table[net] = merge_attrs(table[net], attrs) if net in table else attrs
        return mine


def merge_routes(contributions: Iterable[tuple[ServiceKey, Contribution]]) -> NodeRoutes:
    """The node's routes from every Service's contribution (attributes of a prefix several
    Services or advertisements give one peer merge: merge_attrs)."""
    routes: dict[PeerName, dict[IPNetwork, RouteAttrs]] = {}
    by_service: dict[ServiceKey, Mapping[PeerName, frozenset[IPNetwork]]] = {}
    for key, contribution in contributions:
        if not contribution:
            continue
        for peer, nets in contribution.items():
            table = routes.setdefault(peer, {})
            for net, attrs in nets.items():
                known = table.get(net)
                table[net] = attrs if known is None or known == attrs else merge_attrs(known, attrs)
        by_service[key] = {peer: frozenset(nets) for peer, nets in contribution.items()}
    return NodeRoutes(routes, by_service)


def routes_for(config: Config, plans: Iterable[ServiceRoutes], node: NodeInfo | None) -> NodeRoutes:
    """The routes `node` sends (see the module docstring)."""
    if node is None:
        return NodeRoutes({}, {})
    view = NodeView(config, node)
    return merge_routes((plan.service, view.contribution(plan)) for plan in plans)


def merge_attrs(a: RouteAttrs, b: RouteAttrs) -> RouteAttrs:
    """One prefix given to one peer twice: the higher local-pref, the sorted union of the
    communities."""
    prefs = [p for p in (a.local_pref, b.local_pref) if p is not None]
    return RouteAttrs(
        max(prefs) if prefs else None, tuple(sorted(set(a.communities) | set(b.communities)))
    )
