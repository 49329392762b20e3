"""The BGP speaker end to end on the bed: the real control plane, the controller, one
`lbctl-speaker` per node under its ServiceAccount driving its own ExaBGP, and BIRD 2 in the
router namespace with a session to every node. Traffic goes client -> router (ECMP over the
announcing nodes) -> a node's kube-proxy -> a backend Pod; the routes are whatever the speakers
made BIRD learn, nothing is written by the test."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apps
import pytest
import yaml
from kubernetes import client, config

from lbctl.lab import agents, bird, nsutil, plan
from lbctl.lab.bed import Bed
from lbctl.lab.procs import WaitTimeout, wait_for

# The kubelet stand-in leaves an asyncio subprocess transport to the collector when a node's
# agent is stopped (a lab leak, noted in docs/lab.md); its __del__ warning may fire in any test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*BaseSubprocessTransport:pytest.PytestUnraisableExceptionWarning"
)
CONDITION = "lbctl.io/AnnouncedBGP"
BGP4 = list(plan.BGP_VIPS4)  # 203.0.113.192/26
POOL4 = f"{BGP4[0]}-{BGP4[31]}"  # .192-.223: /32 routes
AGG4 = f"{BGP4[32]}-{BGP4[47]}"  # .224-.239: announced as /28 aggregates
POOL6 = "2001:db8:3::10-2001:db8:3::ff"
UNSELECTED = {"lbctl.io/bgp-test": "no-node-has-this"}


def bgp_config() -> str:
    """lbctl's format: two v4 pools (one aggregated, with communities), a v6 pool, a peer per
    family on the router, and one peer whose nodeSelectors select no node."""
    router = {"myASN": plan.NODE_ASN, "peerASN": plan.ROUTER_ASN, "holdTime": "9s"}
    doc = {
        "apiVersion": "lbctl.io/v1alpha1",
        "kind": "Config",
        "pools": [
            {"name": "bgp", "addresses": [POOL4, POOL6]},
            {"name": "agg", "addresses": [AGG4], "autoAssign": False},
        ],
        "bgpAdvertisements": [
            {"name": "plain", "pools": ["bgp"]},
            {
                "name": "tagged",
                "pools": ["agg"],
                "aggregationLength": 28,
                "communities": ["64500:100", "large:64500:1:2"],
            },
        ],
        "bgpPeers": [
            {"name": "router", "address": str(plan.GATEWAY4), **router},
            {"name": "router6", "address": str(plan.GATEWAY6), **router},
            {
                "name": "nobody",
                "address": str(plan.GATEWAY4),
                "port": 1179,
                "nodeSelectors": [{"matchLabels": UNSELECTED}],
                **router,
            },
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class BGPBed:
    bed: Bed
    api: client.ApiClient
    speakers: dict[str, agents.Agent] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def node(self, name: str) -> Any:
        return self.bed.topology.node(name)

    def addr(self, name: str) -> str:
        return str(self.node(name).host.addr4)

    def netns(self, name: str) -> str:
        return str(self.node(name).netns)

    def metric(self, node: str, prefix: str) -> float | None:
        """The sum of the node's speaker samples whose line starts with `prefix`; None if none."""
        _, text = agents.scrape(self.netns(node), agents.NODE_METRICS)
        found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith(prefix)]  # fmt: skip
        return sum(found) if found else None

    def next_hops(self, prefix: str) -> set[str]:
        """The next hops of `prefix` in the router namespace's kernel table."""
        family = "-6" if ":" in prefix else "-4"
        out = nsutil.ip(family, "route", "show", prefix, netns=self.bed.topology.router.netns)
        words = out.split()
        return {words[i + 1] for i, w in enumerate(words) if w == "via" and i + 1 < len(words)}

    def bird_route(self, prefix: str) -> str:
        return self.bed.topology.birdc(f"show route for {prefix} all")

    def exabgp_pids(self, node: str) -> list[int]:
        """ExaBGP processes started by the node's speaker (its children)."""
        speaker = self.speakers[node].proc.pid
        children = [  # ExaBGP is started by the announcer's thread: look at every thread's
            int(pid)
            for task in Path(f"/proc/{speaker}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]
        return [pid for pid in children if "exabgp" in _cmdline(pid)]

    def exabgp_of(self, node: str, address: object) -> list[int]:
        """The node's ExaBGP holding the session to `address` (its config names the neighbor)."""
        found = []
        for pid in self.exabgp_pids(node):
            conf = Path(_cmdline(pid).split()[-1])
            with contextlib.suppress(OSError):
                if f"neighbor {address} " in conf.read_text():
                    found.append(pid)
        return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@pytest.fixture(scope="module")
def bgp(bed: Bed) -> Iterator[BGPBed]:
    topology = bed.topology
    neighbors = [n.host.addr4 for n in topology.nodes] + [n.host.addr6 for n in topology.nodes]
    topology.start_bird(bird.router_config(neighbors))
    agents.apply_rbac(bed.control)
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lbctl-config", "namespace": "lbctl-system"},
        "data": {"config.yaml": bgp_config()},
    }  # fmt: skip
    with config.new_client_from_config(str(bed.kubeconfig)) as api:
        client.CoreV1Api(api).create_namespaced_config_map("lbctl-system", configmap)
        agents.start_controller(topology, bed.control)
        the_bed = BGPBed(bed, api)
        for node in topology.nodes:
            the_bed.speakers[node.name] = agents.start_speaker(
                topology, bed.control, node, bed.node_api_url
            )
        yield the_bed
    topology.stop_bird()


@pytest.fixture
def app(bgp: BGPBed) -> Iterator[Callable[..., list[str]]]:
    """A Deployment and a LoadBalancer Service of the same name; returns its ingress IPs."""
    made: list[str] = []

    def make(name: str, replicas: int = 1, node: str | None = None, **spec: Any) -> list[str]:
        apps.deploy(bgp.api, name, replicas, node)
        made.append(name)
        apps.create_service(bgp.api, name, **spec)
        ips: list[str] = wait_for(lambda: apps.ingress(bgp.api, name), 20.0, f"an IP on {name}")
        return ips

    yield make
    for name in made:
        with contextlib.suppress(client.exceptions.ApiException):
            bgp.core.delete_namespaced_service(name, apps.NS)
        with contextlib.suppress(client.exceptions.ApiException):
            client.AppsV1Api(bgp.api).delete_namespaced_deployment(name, apps.NS)


def hops_become(bgp: BGPBed, prefix: str, nodes: set[str], timeout: float = 10.0) -> None:
    want = {bgp.addr(n) for n in nodes}
    try:
        wait_for(lambda: bgp.next_hops(prefix) == want, timeout, f"{prefix} via {sorted(want)}")
    except WaitTimeout as err:
        raise AssertionError(
            f"{err}; now {bgp.next_hops(prefix)}\n{bgp.bird_route(prefix)}"
        ) from None


def served(bgp: BGPBed, vip: str, timeout: float = 10.0) -> dict[str, str]:
    answer: dict[str, str] = wait_for(lambda: apps.ask(bgp.bed, vip), timeout, f"{vip} answers")
    return answer


def condition(
    bgp: BGPBed, name: str, status: str = "True", timeout: float = 10.0, has: Sequence[str] = ()
) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        cond = apps.condition(bgp.api, name, CONDITION)
        if cond is None or cond["status"] != status:
            return None
        return cond if all(text in cond["message"] for text in has) else None

    found: dict[str, Any] = wait_for(current, timeout, f"{CONDITION}={status} on {name}")
    return found


ALL = {"node-1", "node-2", "node-3"}


def diagnose(bgp: BGPBed, node: str) -> str:
    """The node's BGP metrics, its speaker's last log lines and its ExaBGPs' logs."""
    _, text = agents.scrape(bgp.netns(node), agents.NODE_METRICS)
    lines = [line for line in text.splitlines() if line.startswith("lbctl_bgp")]
    run_dir = bgp.bed.topology.run_dir
    log = (run_dir / "logs" / f"speaker-{node}.log").read_text(errors="replace").splitlines()
    lines += ["speaker log:", *log[-15:]]
    for exa in sorted((run_dir / f"bgp-{node}").glob("peer-*/exabgp.log")):
        lines += [f"{exa}:", *exa.read_text(errors="replace").splitlines()[-10:]]
    lines.append(bgp.bed.topology.birdc("show protocols"))
    return "\n".join(lines)


# -- routes follow the Services --------------------------------------------------------------------


def test_a_service_is_routed_over_every_node_and_withdrawn_when_deleted(
    bgp: BGPBed, app: Callable[..., list[str]]
) -> None:
    [vip] = app("web", replicas=2)
    hops_become(bgp, vip, ALL)
    assert f"{vip}/32" in bgp.bird_route(vip)
    assert served(bgp, vip)["pod"].startswith("web-")
    # Each node's session state reaches the writer through its Node annotation: eventually the
    # condition names all three Established.
    cond = condition(bgp, "web", has=[f"{node} to router (Established)" for node in ALL])
    assert cond["reason"] == "Announced"
    bgp.core.delete_namespaced_service("web", apps.NS)
    wait_for(lambda: bgp.next_hops(vip) == set(), 10.0, f"{vip} withdrawn")
    assert "Network not found" in bgp.bird_route(vip) or vip not in bgp.bird_route(vip)


def test_local_policy_routes_only_to_nodes_with_a_ready_local_endpoint(
    bgp: BGPBed, app: Callable[..., list[str]]
) -> None:
    [vip] = app("local", node="node-2", externalTrafficPolicy="Local")
    hops_become(bgp, vip, {"node-2"})
    answer = served(bgp, vip)
    assert answer["node"] == "node-2"
    client_addr = str(bgp.bed.topology.client.host.addr4)
    assert answer["client"].rsplit(":", 1)[0] == client_addr, "the backend sees the far client"
    # The pod moves to node-3: the route follows it.
    patch = {"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": "node-3"}}}}}
    client.AppsV1Api(bgp.api).patch_namespaced_deployment("local", apps.NS, patch)
    hops_become(bgp, vip, {"node-3"}, timeout=20.0)


def test_a_stopped_kubelet_takes_its_node_out_of_the_next_hops(
    bgp: BGPBed, app: Callable[..., list[str]]
) -> None:
    [vip] = app("notready", replicas=1, node="node-1")
    hops_become(bgp, vip, ALL)
    bgp.bed.kubelet.stop_node("node-3")
    try:
        hops_become(bgp, vip, {"node-1", "node-2"}, timeout=20.0)
        assert served(bgp, vip)["node"] == "node-1"
    finally:
        bgp.bed.kubelet.start_node("node-3")
    hops_become(bgp, vip, ALL, timeout=20.0)


def test_communities_and_aggregation_reach_the_router(
    bgp: BGPBed, app: Callable[..., list[str]]
) -> None:
    [vip] = app("tagged", loadBalancerIP=str(BGP4[33]))
    aggregate = str(ipaddress.ip_network(f"{vip}/28", strict=False))
    hops_become(bgp, aggregate, ALL)
    route = bgp.bird_route(aggregate)
    assert f"{aggregate}" in route
    assert "(64500,100)" in route, route
    assert "(64500, 1, 2)" in route, route
    assert served(bgp, vip)["pod"].startswith("tagged-")


def test_an_ipv6_address_reaches_bird_over_the_ipv6_session(
    bgp: BGPBed, app: Callable[..., list[str]]
) -> None:
    # Dual-stack: the bed's pods have IPv4 addresses only, so an IPv6-only Service would have
    # no endpoints (and rightly no route).
    ips = app("dual", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    vip4, vip6 = sorted(ips, key=lambda ip: ipaddress.ip_address(ip).version)
    assert ipaddress.ip_address(vip6).version == 6
    want = {str(bgp.node(n).host.addr6) for n in ALL}
    try:
        wait_for(lambda: bgp.next_hops(vip6) == want, 10.0, f"{vip6}/128 via every node")
    except WaitTimeout as err:
        router = nsutil.ip("-6", "route", "show", vip6, netns=bgp.bed.topology.router.netns)
        raise AssertionError(f"{err}: kernel {router!r}\n{bgp.bird_route(vip6)}\n"
                             f"{diagnose(bgp, 'node-1')}") from None  # fmt: skip
    route = bgp.bird_route(vip6)
    assert f"{vip6}/128" in route
    hops_become(bgp, vip4, ALL)
    condition(bgp, "dual", has=["router6 (Established)", "router (Established)"])


def test_a_peer_whose_selectors_match_no_node_gets_no_session(bgp: BGPBed) -> None:
    for node in ALL:
        assert bgp.metric(node, 'lbctl_bgp_session_up{peer="router"}') == 1.0
        assert bgp.metric(node, 'lbctl_bgp_session_up{peer="nobody"}') is None
        assert bgp.metric(node, 'lbctl_bgp_prefixes_desired{peer="nobody"}') is None


# -- ExaBGP and BIRD failures --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_dead_or_hung_exabgp_is_replaced_and_its_routes_come_back(
    bgp: BGPBed, app: Callable[..., list[str]], sig: signal.Signals
) -> None:
    [vip] = app(f"exa-{sig.name.lower()[3:]}", replicas=1)
    hops_become(bgp, vip, ALL)
    [old] = bgp.exabgp_of("node-1", plan.GATEWAY4)
    start = time.monotonic()
    os.kill(old, sig)
    try:
        wait_for(lambda: [p for p in bgp.exabgp_of("node-1", plan.GATEWAY4) if p != old], 3.0,
                 "a new ExaBGP on node-1")  # fmt: skip
        replaced = time.monotonic() - start
        hops_become(bgp, vip, ALL, timeout=5.0)
        back = time.monotonic() - start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
    print(f"exabgp {sig.name}: new pid after {replaced:.2f} s, route back after {back:.2f} s")


def test_a_restarted_bird_gets_every_route_back(bgp: BGPBed, app: Callable[..., list[str]]) -> None:
    [vip] = app("birdback", replicas=1)
    hops_become(bgp, vip, ALL)
    topology = bgp.bed.topology
    neighbors = [n.host.addr4 for n in topology.nodes] + [n.host.addr6 for n in topology.nodes]
    topology.stop_bird()
    start = time.monotonic()
    topology.start_bird(bird.router_config(neighbors))
    hops_become(bgp, vip, ALL, timeout=5.0)
    print(f"bird restarted: routes back after {time.monotonic() - start:.2f} s")
