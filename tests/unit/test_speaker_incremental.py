"""The speaker's incremental plans (speaker/agent.py replan): after any sequence of watch events,
the kept-and-replanned L2 groups, BGP plans and routes equal what whole plans of the same view
give, and the conditions pass that checks only what may have changed leaves nothing for a pass
over every Service to write; and a plan that changes nothing writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import random
import time
from collections.abc import Mapping
from typing import Any

from speaker_fakes import DataPlane, Kube

from lbctl.core.bgpplan import plan_bgp, routes_for
from lbctl.core.bgproutes import Desired, PeerStatus, Statuses
from lbctl.core.l2plan import plan_l2
from lbctl.core.liveness_types import Verdict
from lbctl.core.model import NodeName, PeerName
from speaker.agent import GATHER_MAX, Agent
from speaker.bgp import SENDING_HOLD
from speaker.dataplane_types import Held
from speaker.metrics import Metrics

NET = ipaddress.ip_network("203.0.113.192/28")
NODES = ("node-1", "node-2", "node-3")
CONFIG = """apiVersion: lbctl.io/v1alpha1
kind: Config
pools:
- name: p
  addresses: ["203.0.113.192/28"]
l2Advertisements:
- name: l2
bgpAdvertisements:
- name: bgp
  aggregationLength: {agg}
bgpPeers:
- name: router
  address: "192.0.2.1"
  myASN: 64512
  peerASN: 64513
"""


class Announcer:
    def __init__(self) -> None:
        self.desired: Desired = {}

    def start(self) -> None: ...
    def configure(self, sessions: Mapping[PeerName, object]) -> None: ...
    def sync(self, desired: Desired) -> None:
        self.desired = desired

    def statuses(self) -> Statuses:
        return {}

    def close(self) -> None: ...


def service(i: int, ip: int, *, local: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": f"s{i}", "uid": f"u{i}", "generation": 1},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local" if local else "Cluster"},
        "status": {"loadBalancer": {"ingress": [{"ip": str(NET[ip])}]}},
    }


def endpoint_slice(i: int, node: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": f"s{i}-x",
                     "labels": {"kubernetes.io/service-name": f"s{i}"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.51.100.2"], "conditions": {"ready": ready},
                       "nodeName": node}],
    }  # fmt: skip


def node(name: str, *, ready: bool = True) -> dict[str, Any]:
    number = NODES.index(name) + 11
    return {
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": f"192.0.2.{number}"}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def agent() -> tuple[Agent, Kube, Announcer]:
    kube, announcer = Kube(), Announcer()
    me = Agent(NodeName("node-1"), kube, DataPlane(), Metrics(),  # type: ignore[arg-type]
               config_ref=("lbctl-system", "lbctl-config"), bgp=announcer)  # fmt: skip
    me.on_config("ADDED", {"data": {"config.yaml": CONFIG.format(agg=32)}})
    for name in NODES:
        me.on_node("ADDED", node(name))
    return me, kube, announcer


def add(me: Agent, i: int, node_name: str, *, local: bool = False) -> None:
    """Service s{i} holding the pool's (i + 1)th address, with one ready endpoint on a node."""
    me.on_service("ADDED", service(i, i + 1, local=local))
    me.on_slice("ADDED", endpoint_slice(i, node_name))


def whole(me: Agent) -> tuple[object, ...]:
    """The same view planned from scratch."""
    assert me.config is not None
    services = [o.held for o in me.services.values()]
    slices: dict[Any, list[Any]] = {}
    for info in me.slices.every():
        if info.service is not None:
            slices.setdefault(info.service, []).append(info)
    groups = plan_l2(me.config, services, slices, me.nodes.values())
    plans = plan_bgp(me.config, services, slices, me.nodes.values())
    return groups, plans, routes_for(me.config, plans, me.nodes.get(me.node)).desired


def test_incremental_plans_equal_whole_plans_after_random_events() -> None:
    rng = random.Random(7)
    me, kube, announcer = agent()
    bgp = me.bgp
    assert bgp is not None
    router = PeerName("router")

    async def run() -> None:
        for _ in range(300):
            i = rng.randrange(12)
            roll = rng.random()
            if roll < 0.3:  # two Services may share an IP: sharing groups form and split
                me.on_service("MODIFIED", service(i, rng.randrange(1, 9), local=rng.random() < 0.3))
            elif roll < 0.4:
                me.on_service("DELETED", service(i, 1))
            elif roll < 0.7:
                me.on_slice("MODIFIED", endpoint_slice(i, rng.choice(NODES),
                                                       ready=rng.random() < 0.8))  # fmt: skip
            elif roll < 0.75:
                me.on_slice("DELETED", endpoint_slice(i, NODES[0]))
            elif roll < 0.85:
                me.on_node("MODIFIED", node(rng.choice(NODES), ready=rng.random() < 0.7))
            elif roll < 0.9:
                agg = rng.choice((32, 30, 28))
                me.on_config("MODIFIED", {"data": {"config.yaml": CONFIG.format(agg=agg)}})
            elif roll < 0.95:  # the announcer acknowledges some routes, or the session changes
                nets = list(announcer.desired.get(router, {}))
                sent = frozenset(rng.sample(nets, rng.randrange(len(nets) + 1)))
                bgp._status_changed({router: PeerStatus(rng.random() < 0.8, sent)})
            elif me.l2.groups:  # the data plane takes or drops a group: its conditions follow
                key = rng.choice(sorted(me.l2.groups, key=str))
                held = dict(me.held)
                if held.pop(key, None) is None:
                    held[key] = Held(key, me.l2.groups[key].ips, "eth0", Verdict.OWNER)
                me._held_changed(held, frozenset({key}))
            if rng.random() < 0.5:
                await me.replan()
                groups, plans, desired = whole(me)
                assert me.l2.ordered() == groups
                assert tuple(me.bgp_by[k] for k in sorted(me.bgp_by)) == plans
                assert announcer.desired == desired
                await me._write_conditions()
                written = len(kube.patches)
                me._recheck = None  # a pass over every Service finds nothing left to write
                await me._write_conditions()
                assert kube.patches[written:] == []

    asyncio.run(run())


def test_a_plan_that_changes_nothing_writes_nothing() -> None:
    me, kube, _ = agent()

    async def run() -> None:
        for i in range(5):
            add(me, i, NODES[i % 3])
        await me.replan()
        await me._write_conditions()
        written = len(kube.patches)
        assert written > 0  # this node writes the conditions of the Services it announces
        me.on_node("MODIFIED", node("node-2"))  # a heartbeat: nothing the planners read
        await me.replan()
        await me._write_conditions()
        assert len(kube.patches) == written

    asyncio.run(run())


def test_passes_wait_as_long_as_the_last_one_took_so_a_burst_costs_one_pass_per_batch() -> None:
    me, _, _ = agent()
    spans: list[tuple[float, float]] = []

    async def work() -> None:  # a pass costing 50 ms
        start = time.monotonic()
        await asyncio.sleep(0.05)
        spans.append((start, time.monotonic()))

    async def run() -> int:
        due, events = asyncio.Event(), 0
        paced = asyncio.create_task(me._paced("test", due, work, lambda: None))
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:  # a watch burst: an event every 2 ms
            due.set()
            events += 1
            await asyncio.sleep(0.002)
        paced.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await paced
        return events

    events = asyncio.run(run())
    assert len(spans) >= 2
    for (start, end), (after, _) in itertools.pairwise(spans):
        assert after >= end + min(end - start, GATHER_MAX) - 0.002
    assert events >= 5 * len(spans), "many events per pass"


def test_bgp_conditions_wait_while_this_node_sends_its_routes_at_most_sending_hold() -> None:
    me, kube, announcer = agent()
    bgp = me.bgp
    assert bgp is not None
    router = PeerName("router")

    def bgp_patches() -> list[dict[str, object]]:
        return [p for p in kube.patches if p.get("type") == "lbctl.io/AnnouncedBGP"]

    async def run() -> None:
        bgp._status_changed({router: PeerStatus(True, frozenset())})
        for i in range(6):
            add(me, i, "node-1")
        await me.replan()
        table = announcer.desired[router]
        assert len(table) == 6
        await me._write_conditions()
        assert bgp_patches() == [], "nothing written while the routes are being sent"
        bgp._status_changed({router: PeerStatus(True, frozenset(list(table)[:3]))})
        await me._write_conditions()
        assert bgp_patches() == [], "still sending"
        bgp._status_changed({router: PeerStatus(True, frozenset(table))})
        await me._write_conditions()
        written = bgp_patches()
        assert written and all(p["status"] == "True" for p in written), "announced, at once"
        assert not any("sending" in str(p["message"]) for p in written)
        # a route that is never acknowledged holds the conditions back SENDING_HOLD at most
        add(me, 7, "node-1", local=True)  # only node-1 announces: it writes
        await me.replan()
        await me._write_conditions()
        before = len(bgp_patches())
        assert bgp._sending_since is not None
        bgp._sending_since -= SENDING_HOLD
        await me._write_conditions()
        late = bgp_patches()[before:]
        assert len(late) == 1 and "sending" in str(late[0]["message"])

    asyncio.run(run())


def test_a_config_edit_plans_again_only_the_mode_whose_part_of_the_config_changed() -> None:
    me, _, announcer = agent()

    async def run() -> None:
        for i in range(4):
            add(me, i, NODES[i % 3])
        await me.replan()
        groups, plans = dict(me.l2.groups), dict(me.bgp_by)
        me.on_config("MODIFIED", {"data": {"config.yaml": CONFIG.format(agg=30)}})
        await me.replan()
        assert all(me.l2.groups[k] is g for k, g in groups.items()), "L2 plan kept"
        assert all(me.bgp_by[k] is not p for k, p in plans.items()), "BGP planned again"
        assert {n.prefixlen for n in announcer.desired[PeerName("router")]} == {30}
        assert (me.l2.ordered(), tuple(me.bgp_by[k] for k in sorted(me.bgp_by))) == whole(me)[:2]

    asyncio.run(run())
