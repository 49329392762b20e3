"""Builders for the L2 planner's and the AnnouncedL2 condition's tests: pools, nodes, Services,
EndpointSlices, written as briefly as the rule tables need."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from lbctl.core.adapt import EndpointInfo, EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.l2plan import AnnouncementGroup, plan_l2
from lbctl.core.model import (
    AddressRange,
    Config,
    L2Advertisement,
    LabelSelector,
    NodeName,
    Pool,
    PoolName,
    ServiceKey,
    TrafficPolicy,
)

IP = ipaddress.ip_address


def _range(first: str, last: str) -> AddressRange:
    return AddressRange(IP(first), IP(last), f"{first}-{last}")


POOL_A = Pool(
    PoolName("a"),
    (_range("192.0.2.0", "192.0.2.255"), _range("2001:db8::", "2001:db8::ff")),
)
POOL_B = Pool(PoolName("b"), (_range("198.51.100.0", "198.51.100.255"),))
EVERY_POOL = L2Advertisement("every-pool")  # no pools, no selectors, no interfaces
WEB = ServiceKey("shop/web")


def adv(
    name: str,
    *pools: str,
    selectors: Sequence[LabelSelector] = (),
    interfaces: Sequence[str] = (),
) -> L2Advertisement:
    return L2Advertisement(name, tuple(map(PoolName, pools)), tuple(selectors), tuple(interfaces))


def zone(value: str) -> LabelSelector:
    return LabelSelector(match_labels=(("zone", value),))


def config(*advertisements: L2Advertisement) -> Config:
    return Config(pools=(POOL_A, POOL_B), l2_advertisements=advertisements)


def node(
    name: str,
    *,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    excluded: bool = False,
    network_unavailable: bool = False,
    out_of_service: bool = False,
    unreachable: bool = False,
    unschedulable: bool = False,
) -> NodeInfo:
    return NodeInfo(
        NodeName(name),
        labels=tuple(sorted((labels or {}).items())),
        ready=ready,
        network_unavailable=network_unavailable,
        excluded=excluded,
        out_of_service=out_of_service,
        unschedulable=unschedulable,
        unreachable=unreachable,
    )


def nodes(*names: str) -> tuple[NodeInfo, ...]:
    return tuple(node(n) for n in names)


def svc(
    key: str = WEB,
    *ips: str,
    local: bool = False,
    pool: str | None = None,
    load_balancer: bool = True,
    lb_class: str | None = None,
) -> HeldService:
    return HeldService(
        key=ServiceKey(key),
        ips=tuple(IP(i) for i in ips or ("192.0.2.10",)),
        traffic_policy=TrafficPolicy.LOCAL if local else TrafficPolicy.CLUSTER,
        allocated_pool=PoolName(pool) if pool else None,
        load_balancer=load_balancer,
        lb_class=lb_class,
    )


def ep(node_name: str | None, *, ready: bool = True, serving: bool | None = None) -> EndpointInfo:
    """An endpoint on a node; serving defaults to ready, as the API does; not ready and serving
    means terminating."""
    serving = ready if serving is None else serving
    return EndpointInfo(
        addresses=(IP("10.1.0.1"),),
        node_name=NodeName(node_name) if node_name else None,
        ready=ready,
        serving=serving,
        terminating=serving and not ready,
    )


def slices(
    key: str = WEB, *endpoints: EndpointInfo
) -> dict[ServiceKey, tuple[EndpointSliceInfo, ...]]:
    return {ServiceKey(key): (EndpointSliceInfo(f"{key}-x", ServiceKey(key), endpoints),)}


def plan(
    cfg: Config,
    services: Iterable[HeldService],
    endpoint_slices: dict[ServiceKey, tuple[EndpointSliceInfo, ...]],
    known: Iterable[NodeInfo],
    lb_class: str | None = None,
) -> tuple[AnnouncementGroup, ...]:
    return plan_l2(cfg, services, endpoint_slices, known, lb_class=lb_class)


def only(groups: tuple[AnnouncementGroup, ...]) -> AnnouncementGroup:
    assert len(groups) == 1, groups
    return groups[0]
