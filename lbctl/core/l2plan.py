"""The L2 planner: who may announce each set of shared IPs, in rank order, and why not the others;
called by the speaker with its whole view on every change (it then keeps what concerns its node).

The plan depends only on its inputs, never on which node computes it, nor on their order: every
speaker computes the same groups, rankings and reasons. The rules (metallb-compat.md, "L2 owner",
plus issue 9):

- Services: type LoadBalancer, with exactly the handled loadBalancerClass (None: none set),
  holding at least one ingress IP. Any other Service is not ours to announce and is left out.
- Groups: Services holding a common ingress IP form one group, transitively; one owner announces
  every IP of the group. Within a group Services are sorted by key ("namespace/name"), and its IPs
  follow that order, each Service's in ingress order, without repeats. Groups are ordered by
  their first Service's key.
- Key IP (the rendezvous key, election.rank): the first ingress IP of the group's first Service.
  For one Service it is MetalLB's choice; for shared IPs it is the same IP whichever Service
  came first, as sharers normally hold the same IPs.
- Pool: the pool whose ranges hold the key IP (ranges never overlap, so there is at most one;
  MetalLB's speaker also goes by the address, not by the annotation). When no range holds it (IPs
  the controller kept outside every pool), the first Service's ip-allocated-from-pool annotation,
  if it names a pool of the config. No pool: NoL2Advertisement.
- Advertisements: those listing the pool, or listing no pool (every pool). None: NoL2Advertisement.
  A node may announce if any of them selects it (empty nodeSelectors select every node); its
  interfaces are the union of the selecting advertisements' interfaces, or () (the interface
  whose subnet holds the VIP) as soon as one of them names none (MetalLB's ipAdvertisementFor).
- Nodes: not excluded, not out of service, network available, not unreachable, Ready
  (node_skip). Cordoned nodes stay eligible: kube-proxy still forwards there, and a drain moves
  ETP Local IPs through their endpoints.
- Endpoints: a Service needs a ready endpoint somewhere, or failing that a serving one
  (terminating pods kube-proxy still sends to when nothing is ready, KEP-1669); a group in which
  no Service has one is NoReadyEndpoints. With externalTrafficPolicy Local only nodes with a
  ready local endpoint may announce, or, when no candidate has one, those with a serving one
  (kube-proxy's own fallback): a draining node gives the IP up as soon as another has a ready pod.
- Sharing: a node may announce a group if it may announce every Service of the group that has
  an endpoint. Services without one (`idle`) do not veto: they would otherwise take down the IP
  of Services that can serve. Sharing ETP Local Services select the same pods (sharing rule), so
  the intersection is their common nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from lbctl.core import election
from lbctl.core.adapt import EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.eligibility import empty_mapping, local_nodes, node_skip, pool_of, serves
from lbctl.core.model import (
    Config,
    IPAddress,
    L2Advertisement,
    NodeName,
    PoolName,
    ServiceKey,
    TrafficPolicy,
    any_selector_matches,
)
from lbctl.core.reasons import L2Failure, NodeSkip


@dataclass(frozen=True, slots=True)
class AnnouncementGroup:
    """One set of shared IPs, the Services holding them, and who may announce them."""

    services: tuple[ServiceKey, ...]  # sorted by key
    ips: tuple[IPAddress, ...]  # in service order, each Service's in ingress order
    key_ip: IPAddress  # services[0]'s first ingress IP: the rendezvous key
    pool: PoolName | None  # None: the key IP is in no pool of the config
    advertisements: tuple[str, ...]  # names of the L2 advertisements covering the pool
    ranking: tuple[NodeName, ...]  # nodes that may announce, rank order; empty iff failure
    failure: L2Failure | None  # why nobody may announce; None when ranking is not empty
    idle: tuple[ServiceKey, ...] = ()  # Services of the group without any ready endpoint
    # Every node known but not ranked, and why; empty when the group failed before nodes were
    # looked at (NoL2Advertisement, NoReadyEndpoints).
    skipped: Mapping[NodeName, NodeSkip] = field(default_factory=empty_mapping, hash=False)
    # For each node the advertisements select (a superset of ranking): the interfaces it may
    # answer on; () means the interface whose subnet holds the VIP.
    interfaces: Mapping[NodeName, tuple[str, ...]] = field(
        default_factory=empty_mapping, hash=False
    )

    @property
    def key(self) -> IPAddress:
        """The key IP (liveness_types.GroupView): the data plane takes these groups as they are."""
        return self.key_ip

    @property
    def owner(self) -> NodeName | None:
        return election.owner(self.ranking)

    @property
    def monitors(self) -> tuple[NodeName, ...]:
        return election.monitors(self.ranking)

    def interfaces_for(self, node: NodeName) -> tuple[str, ...]:
        return self.interfaces.get(node, ())


@dataclass(frozen=True, slots=True)
class _Reach:
    """What one pool's advertisements allow, computed once per plan and shared, read-only, by
    its groups (one mapping per pool, not per group: 10,000 groups on 1,000 nodes)."""

    advertisements: tuple[str, ...]
    interfaces: Mapping[NodeName, tuple[str, ...]]  # nodes that may announce, before endpoints
    skipped: Mapping[NodeName, NodeSkip]


def config_read(config: Config) -> tuple[object, ...]:
    """What of the config plan_l2 reads: two configs equal in these give the same plan."""
    return (config.pools, config.l2_advertisements)


def advertisements_for(config: Config, pool: PoolName | None) -> tuple[L2Advertisement, ...]:
    """The L2 advertisements covering `pool` (those listing no pool cover every pool)."""
    if pool is None:
        return ()
    return tuple(a for a in config.l2_advertisements if not a.pools or pool in a.pools)


def _interfaces(selecting: Sequence[L2Advertisement]) -> tuple[str, ...]:
    if any(not adv.interfaces for adv in selecting):
        return ()
    return tuple(sorted({name for adv in selecting for name in adv.interfaces}))


def _reach(advertisements: Sequence[L2Advertisement], nodes: Iterable[NodeInfo]) -> _Reach:
    interfaces: dict[NodeName, tuple[str, ...]] = {}
    skipped: dict[NodeName, NodeSkip] = {}
    if not advertisements:
        return _Reach((), MappingProxyType(interfaces), MappingProxyType(skipped))
    for node in nodes:
        labels = node.label_map
        selecting = [a for a in advertisements if any_selector_matches(a.node_selectors, labels)]
        reason = node_skip(node) if selecting else NodeSkip.NODE_NOT_SELECTED
        if reason is None:
            interfaces[node.name] = _interfaces(selecting)
        else:
            skipped[node.name] = reason
    names = tuple(a.name for a in advertisements)
    return _Reach(names, MappingProxyType(interfaces), MappingProxyType(skipped))


def _groups(services: Iterable[HeldService]) -> list[tuple[HeldService, ...]]:
    """Services sharing an IP, transitively; sorted within and between groups by key."""
    ordered = sorted({s.key: s for s in services}.values(), key=lambda s: s.key)
    parent = list(range(len(ordered)))  # union-find over indexes; a root is its lowest index

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder: dict[IPAddress, int] = {}
    for i, service in enumerate(ordered):
        for ip in service.ips:
            a, b = root(i), root(first_holder.setdefault(ip, i))
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[HeldService]] = {}
    for i, service in enumerate(ordered):
        members.setdefault(root(i), []).append(service)
    return [tuple(group) for group in members.values()]


def _rank_group(
    key_ip: IPAddress,
    active: Sequence[HeldService],
    reach: _Reach,
    slices: Mapping[ServiceKey, Sequence[EndpointSliceInfo]],
) -> tuple[tuple[NodeName, ...], Mapping[NodeName, NodeSkip]]:
    """The ranking of the nodes that may announce for every active Service, and the skipped."""
    candidates, skipped = set(reach.interfaces), reach.skipped
    for service in active:
        if service.traffic_policy is not TrafficPolicy.LOCAL:
            continue
        local = local_nodes(slices.get(service.key, ()), candidates)
        if lost := candidates - local:
            lost_skips = dict.fromkeys(sorted(lost), NodeSkip.NO_LOCAL_ENDPOINT)
            skipped = MappingProxyType({**skipped, **lost_skips})
            candidates = local
    return election.rank(candidates, key_ip), skipped


def _plan_group(
    members: Sequence[HeldService],
    config: Config,
    reach_of: Callable[[PoolName | None], _Reach],
    slices: Mapping[ServiceKey, Sequence[EndpointSliceInfo]],
    rankings: dict[tuple[NodeName, ...], tuple[NodeName, ...]],
) -> AnnouncementGroup:
    """`rankings`: the plan's equal rankings as one tuple (few nodes give few distinct ones)."""
    key_ip = members[0].ips[0]
    pool = pool_of(config, members[0], key_ip)
    reach = reach_of(pool)
    active = [s for s in members if serves(slices.get(s.key, ()))]
    ranking: tuple[NodeName, ...] = ()
    skipped: Mapping[NodeName, NodeSkip] = empty_mapping()
    if not reach.advertisements:
        failure: L2Failure | None = L2Failure.NO_L2_ADVERTISEMENT
    elif not active:
        failure = L2Failure.NO_READY_ENDPOINTS
    else:
        ranking, skipped = _rank_group(key_ip, active, reach, slices)
        ranking = rankings.setdefault(ranking, ranking)
        failure = None if ranking else L2Failure.NO_ELIGIBLE_NODE
    ips = tuple(dict.fromkeys(ip for s in members for ip in s.ips))
    return AnnouncementGroup(
        services=tuple(s.key for s in members),
        ips=members[0].ips if ips == members[0].ips else ips,  # one Service's: its own tuple
        key_ip=key_ip,
        pool=pool,
        advertisements=reach.advertisements,
        ranking=ranking,
        failure=failure,
        idle=tuple(s.key for s in members if s not in active),
        skipped=skipped,
        interfaces=reach.interfaces,
    )


def plan_l2(
    config: Config,
    services: Iterable[HeldService],
    slices: Mapping[ServiceKey, Sequence[EndpointSliceInfo]],
    nodes: Iterable[NodeInfo],
    *,
    lb_class: str | None = None,
) -> tuple[AnnouncementGroup, ...]:
    """Every group of shared IPs to announce, with its ranking or why nobody may announce it.

    `slices` holds each Service's EndpointSlices (EndpointSliceInfo.service); `nodes` every
    Node known, with unique names. One key per Service: a later duplicate replaces an earlier.
    (plantables.GroupTable keeps a plan and plans again only the groups a change touches.)
    """
    wanted = [s for s in services if s.load_balancer and s.lb_class == lb_class and s.ips]
    known = sorted((n for n in nodes if n.name), key=lambda n: n.name)
    reaches: dict[PoolName | None, _Reach] = {}

    def reach_of(pool: PoolName | None) -> _Reach:
        if pool not in reaches:
            reaches[pool] = _reach(advertisements_for(config, pool), known)
        return reaches[pool]

    rankings: dict[tuple[NodeName, ...], tuple[NodeName, ...]] = {}
    return tuple(_plan_group(m, config, reach_of, slices, rankings) for m in _groups(wanted))
