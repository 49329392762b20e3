"""The BGP half of the bed: BIRD runs in the router namespace, answers birdc, learns a route a
node announces (ExaBGP), installs it in the router's kernel table, and dies with the topology."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.lab import bird, nsutil, plan
from lbctl.lab.runstate import proc_start_time
from lbctl.lab.topology import Topology

EXABGP = str(Path(sys.executable).parent / "exabgp")
VIP = "203.0.113.200"


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology(nodes=2) as topology:
        yield topology


def exabgp_config(node: plan.Host, route: str) -> str:
    return f"""neighbor {plan.GATEWAY4} {{
    router-id {node.addr4};
    local-address {node.addr4};
    local-as {plan.NODE_ASN};
    peer-as {plan.ROUTER_ASN};
    family {{ ipv4 unicast; }}
    static {{ route {route}/32 next-hop self; }}
}}
"""


def wait_for_text(fetch: object, text: str, timeout: float = 5.0) -> str:
    assert callable(fetch)
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = str(fetch())
        if text in out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen within {timeout} s; last output:\n{out}")


def test_bird_runs_in_the_router_namespace_and_answers(topo: Topology) -> None:
    neighbors = [n.host.addr4 for n in topo.nodes]
    pid = topo.start_bird(bird.router_config(neighbors))
    assert "Daemon is up and running" in topo.birdc("show status")
    protocols = topo.birdc("show protocols")
    assert "peer1" in protocols and "peer2" in protocols
    router_ns = nsutil.netns_path(topo.router.netns).stat().st_ino
    assert Path(f"/proc/{pid}/ns/net").stat().st_ino == router_ns


def test_bird_with_a_bad_config_fails_with_the_parse_error(topo: Topology) -> None:
    with pytest.raises(nsutil.NetnsError, match=r"syntax error|unexpected"):
        topo.start_bird("router id nonsense;\n")


def test_a_node_announcement_reaches_the_router_kernel_table(topo: Topology) -> None:
    node = topo.nodes[0]
    topo.start_bird(bird.router_config([n.host.addr4 for n in topo.nodes]))
    conf = topo.run_dir / "exabgp-node-1.conf"
    conf.write_text(exabgp_config(node.host, VIP))
    root = topo.run_dir / "exabgp-node-1"
    (root / "run").mkdir(parents=True)
    topo.spawn(
        node.netns,
        [EXABGP, str(conf)],
        role="exabgp-node-1",
        env={"exabgp_daemon_user": "root", "EXABGP_ROOT": str(root)},
    )
    out = wait_for_text(lambda: topo.birdc(f"show route for {VIP}"), f"{VIP}/32")
    assert f"via {node.host.addr4}" in out
    kernel = wait_for_text(
        lambda: nsutil.ip("route", "show", VIP, netns=topo.router.netns), "proto bird"
    )
    assert f"via {node.host.addr4}" in kernel


def test_teardown_stops_bird_and_every_spawned_daemon() -> None:
    with Topology(nodes=1) as topology:
        pid = topology.start_bird(bird.router_config([topology.nodes[0].host.addr4]))
        sleeper = topology.spawn(topology.nodes[0].netns, ["sleep", "30"], role="sleeper").pid
        runid = topology.runid
    assert proc_start_time(pid) is None
    assert proc_start_time(sleeper) is None
    assert [ns for ns in nsutil.list_netns() if plan.runid_of(ns) == runid] == []
