"""Plans kept between changes (lbctl/core/plantables.py): after random changes, GroupTable holds
what plan_l2 gives for the whole view and RouteTable what routes_for gives, including prefixes
several Services give with different attributes (aggregates); the changed-key reports name
exactly what moved."""

from __future__ import annotations

import ipaddress
import random

from l2plan_helpers import POOL_A, POOL_B, ep, nodes, svc

from lbctl.core.adapt import EndpointSliceInfo, HeldService
from lbctl.core.bgpplan import NodeView, plan_bgp, routes_for
from lbctl.core.l2plan import plan_l2
from lbctl.core.model import (
    BGPAdvertisement,
    BGPPeer,
    Community,
    CommunityKind,
    Config,
    L2Advertisement,
    PeerName,
    ServiceKey,
)
from lbctl.core.plantables import GroupTable, RouteTable

IP = ipaddress.ip_address
ABC = nodes("a", "b", "c")
R1 = BGPPeer(PeerName("r1"), 64500, 64500, IP("192.0.2.1"))  # iBGP: local-pref is sent
CONFIG = Config(
    pools=(POOL_A, POOL_B),
    l2_advertisements=(L2Advertisement("l2"),),
    bgp_advertisements=(
        BGPAdvertisement("one", local_pref=100),
        BGPAdvertisement(
            "agg",
            aggregation_length=29,
            local_pref=200,
            communities=(Community(CommunityKind.STANDARD, (64500, 7)),),
        ),
    ),
    peers=(R1,),
)
Slices = dict[ServiceKey, tuple[EndpointSliceInfo, ...]]


def random_view(
    rng: random.Random, held: dict[ServiceKey, HeldService], slices: Slices
) -> ServiceKey:
    """Change one Service: new IPs (often shared), gone, or its endpoints moved; its key."""
    key = ServiceKey(f"ns/s{rng.randrange(10)}")
    roll = rng.random()
    if roll < 0.5:
        ips = [f"192.0.2.{rng.randrange(1, 12)}" for _ in range(rng.choice((1, 1, 2)))]
        held[key] = svc(key, *ips, local=rng.random() < 0.3)
    elif roll < 0.65:
        held.pop(key, None)
    else:
        where = rng.choice(("a", "b", "c"))
        slices[key] = (EndpointSliceInfo(f"{key}-x", key, (ep(where, ready=rng.random() < 0.8),)),)
    return key


def test_group_table_equals_whole_plans_after_random_changes() -> None:
    rng = random.Random(11)
    held: dict[ServiceKey, HeldService] = {}
    slices: Slices = {}
    table = GroupTable()
    table.plan_all(CONFIG, [], slices, ABC)
    for _ in range(400):
        changed = {random_view(rng, held, slices) for _ in range(rng.randrange(1, 4))}
        before_groups = dict(table.groups)
        table.take_changed()
        table.replan(CONFIG, changed, held.get, slices, ABC)
        whole = plan_l2(CONFIG, held.values(), slices, ABC)
        assert table.ordered() == whole
        moved = {k for k in before_groups.keys() | table.groups.keys()
                 if before_groups.get(k) != table.groups.get(k)}  # fmt: skip
        assert moved <= table.take_changed()
        for group in whole:
            for ip in group.ips:
                assert table.of_ip(ip) == group
            for key in group.services:
                assert table.of_service(key) == group


def test_route_table_equals_routes_for_after_random_changes() -> None:
    rng = random.Random(5)
    held: dict[ServiceKey, HeldService] = {}
    slices: Slices = {}
    table, view = RouteTable(), NodeView(CONFIG, ABC[0])
    for _ in range(400):
        random_view(rng, held, slices)
        plans = {p.service: p for p in plan_bgp(CONFIG, held.values(), slices, ABC)}
        table.changed.clear()
        before = {peer: dict(routes) for peer, routes in table.desired.items()}
        for key in set(plans) | set(table.by_service):
            plan = plans.get(key)
            table.put(key, None if plan is None else view.contribution(plan))
        expected = routes_for(CONFIG, plans.values(), ABC[0])
        assert table.desired == expected.desired
        assert {k: {p: frozenset(n) for p, n in c.items()} for k, c in table.by_service.items()
                if c} == expected.by_service  # fmt: skip
        if table.desired != before:
            assert table.changed == {PeerName("r1")}
    assert any(len(s) > 1 for s in table._givers[PeerName("r1")].values() if isinstance(s, set))
