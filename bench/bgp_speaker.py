"""The BGP speaker on the bed, for bench/bgp.py: Service create -> route in the router's kernel
table; N Services already holding IPs -> every route in BIRD once a BGP advertisement covers
their pool; the speakers' idle CPU (lbctl-speaker and its ExaBGP) with N routes announced.

Everything is real: the control plane, the controller, one lbctl-speaker per node namespace with
its ExaBGP, BIRD 2 in the router namespace. Times are taken from the router: `ip monitor route`
in its namespace for the kernel table, `birdc show route count` for BIRD.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from lib.report import pct

from lbctl.lab import agents, bird, nsutil, plan
from lbctl.lab.bed import Bed
from lbctl.lab.procs import wait_for

NS = "default"
TIMED = list(plan.BGP_VIPS4)[1:31]  # 203.0.113.193-222: /32 routes for the timing run
ADVERTISE_RUNS = 3  # the 10,000-route measurement, repeated on the same Services
MANY = ipaddress.IPv6Network("2001:db8:3:1::/112")  # thousands of Services, over IPv6
ROUTER = {"myASN": plan.NODE_ASN, "peerASN": plan.ROUTER_ASN, "holdTime": "9s"}


def pools_config(*, advertise_many: bool) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "lbctl.io/v1alpha1",
        "kind": "Config",
        "pools": [
            {"name": "timed", "addresses": [f"{TIMED[0]}-{TIMED[-1]}"]},
            {"name": "many", "addresses": [str(MANY)]},
        ],
        "bgpAdvertisements": [{"name": "timed", "pools": ["timed"]}],
        "bgpPeers": [
            {"name": "router", "address": str(plan.GATEWAY4), **ROUTER},
            {"name": "router6", "address": str(plan.GATEWAY6), **ROUTER},
        ],
    }
    if advertise_many:
        doc["bgpAdvertisements"].append({"name": "many", "pools": ["many"]})
    return yaml.safe_dump(doc, sort_keys=False)


class RouteWatch:
    """`ip monitor route` in the router namespace: when each destination first appeared."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "-n", netns, "monitor", "route"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            words = line.split()
            if not words or line[0].isspace() or words[0] == "Deleted":
                continue
            with self._lock:
                self.seen.setdefault(words[0].split("/")[0], now)

    def first(self, ip: str, after: float, timeout: float = 10.0) -> float:
        def found() -> float | None:
            with self._lock:
                at = self.seen.get(ip)
            return at if at is not None and at >= after else None

        at: float = wait_for(found, timeout, f"{ip} in the router's kernel table",
                             error=TimeoutError, interval=0.005)  # fmt: skip
        return at

    def forget(self, ip: str) -> None:
        with self._lock:
            self.seen.pop(ip, None)

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Cluster:
    bed: Bed
    api: client.ApiClient
    routes: RouteWatch
    speakers: dict[str, agents.Agent] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def pids(self) -> list[int]:
        """Every speaker and its children (ExaBGP and its helper processes)."""
        out = []
        for agent in self.speakers.values():
            pid = agent.proc.pid
            out.append(pid)
            out += _descendants(pid)
        return out


def _descendants(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found.append(int(child))
            found += _descendants(int(child))
    return found


@contextlib.contextmanager
def cluster(nodes: int = 3) -> Iterator[Cluster]:
    with Bed(nodes=nodes) as bed, config.new_client_from_config(str(bed.kubeconfig)) as api:
        topology = bed.topology
        hosts = [n.host for n in topology.nodes]
        topology.start_bird(bird.router_config([h.addr4 for h in hosts] + [h.addr6 for h in hosts]))
        agents.apply_rbac(bed.control)
        client.CoreV1Api(api).create_namespaced_config_map("lbctl-system", {
            "metadata": {"name": "lbctl-config", "namespace": "lbctl-system"},
            "data": {"config.yaml": pools_config(advertise_many=False)},
        })  # fmt: skip
        agents.start_controller(topology, bed.control)
        routes = RouteWatch(topology.router.netns)
        try:
            the = Cluster(bed, api, routes)
            for node in topology.nodes:
                the.speakers[node.name] = agents.start_speaker(
                    topology, bed.control, node, bed.node_api_url
                )
            deploy(api, 3)
            wait_for(lambda: sessions_up(the) >= 2 * nodes, 30.0, "every BGP session",
                     error=TimeoutError)  # fmt: skip
            yield the
        finally:
            routes.close()
            topology.stop_bird()


def sessions_up(c: Cluster) -> int:
    out = c.bed.topology.birdc("show protocols")
    return sum(1 for line in out.splitlines() if "Established" in line)


def deploy(api: client.ApiClient, replicas: int) -> None:
    labels = {"app": "bench"}
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, {
        "metadata": {"name": "bench"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "web", "image": "lab", "ports": [{"containerPort": 8080}]}]}}},
    })  # fmt: skip

    def ready() -> bool:
        return (apps.read_namespaced_deployment("bench", NS).status.ready_replicas or 0) >= replicas

    wait_for(ready, 60.0, "the bench backends", error=TimeoutError)


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "type": "LoadBalancer", "selector": {"app": "bench"},
        "ports": [{"port": 80, "targetPort": 8080}], **spec}}  # fmt: skip


def ingress_ip(core: client.CoreV1Api, name: str) -> str | None:
    lb = core.read_namespaced_service(name, NS).status.load_balancer
    return lb.ingress[0].ip if lb and lb.ingress else None


# -- measurements ----------------------------------------------------------------------------------


def create_to_route(c: Cluster, n: int) -> list[float]:
    """Service create -> its /32 in the router namespace's kernel table (one at a time)."""
    out = []
    for i in range(n):
        name = f"timed-{i}"
        start = time.monotonic()
        c.core.create_namespaced_service(NS, service(name))
        ip = wait_for(functools.partial(ingress_ip, c.core, name), 10.0, f"an IP on {name}",
                      error=TimeoutError, interval=0.005)  # fmt: skip
        out.append(c.routes.first(ip, start) - start)
        c.core.delete_namespaced_service(name, NS)
        withdrawn = functools.partial(routed, c, ip, want=False)
        wait_for(withdrawn, 10.0, f"{ip} withdrawn", error=TimeoutError)
        c.routes.forget(ip)
    return out


def routed(c: Cluster, ip: str, *, want: bool = True) -> bool:
    present = bool(nsutil.ip("route", "show", ip, netns=c.bed.topology.router.netns).strip())
    return present == want


def create_many(c: Cluster, n: int) -> float:
    """N IPv6 Services in the `many` pool, each with one ready endpoint on node-1 (8 clients);
    returns seconds until all have IPs.

    The bed's pods have IPv4 addresses only, so an IPv6 Service with a selector would have no
    endpoints (and rightly no route): these have no selector and an EndpointSlice made here,
    as a user's own endpoints would be. The endpoint's address is never dialled (only routes
    are measured)."""
    start = time.monotonic()
    # no node ports: the bed's range holds 2,768, and these Services are only routed
    spec = {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
            "allocateLoadBalancerNodePorts": False}  # fmt: skip
    discovery = client.DiscoveryV1Api(c.api)
    node = c.bed.topology.nodes[0].name

    def make(i: int) -> None:
        name = f"many-{i}"
        body = service(name, **spec)
        del body["spec"]["selector"]
        body["metadata"]["annotations"] = {"lbctl.io/address-pool": "many"}
        c.core.create_namespaced_service(NS, body)
        discovery.create_namespaced_endpoint_slice(NS, {
            "metadata": {"name": f"{name}-bench", "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "bench.lbctl.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [str(plan.PODS4[2])], "conditions": {"ready": True},
                           "nodeName": node}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        })  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(n)))

    def all_have_ips() -> bool:
        # raw JSON: the client's models take tens of seconds to build 10,000 V1Services
        resp = c.core.list_namespaced_service(NS, _preload_content=False)
        items = json.loads(resp.data)["items"]
        have = sum(1 for s in items if s["metadata"]["name"].startswith("many-")
                   and s.get("status", {}).get("loadBalancer", {}).get("ingress"))  # fmt: skip
        print(f"  {have} of {n} Services have an IP", file=sys.stderr, flush=True)
        return have >= n

    # listing thousands of Services is itself load on the API server: every 1 s per 1,000
    wait_for(all_have_ips, 60.0 + n / 5, f"IPs on {n} Services", error=TimeoutError,
             interval=max(1.0, n / 1000))  # fmt: skip
    return time.monotonic() - start


def advertise_many(c: Cluster, n: int, timeout: float, *, on: bool = True) -> float:
    """Patch the ConfigMap so a BGP advertisement covers the `many` pool (`on`), or no longer
    does; seconds until BIRD holds all N of its prefixes (or none)."""
    patch = {"data": {"config.yaml": pools_config(advertise_many=on)}}
    cpu = cpu_by_pid()
    start = time.monotonic()
    c.core.patch_namespaced_config_map("lbctl-config", "lbctl-system", patch)

    def done() -> bool:
        held = prefixes_in_bird(c)
        return held >= n if on else held == 0

    wait_for(done, timeout,
             f"{n if on else 'no'} routes in BIRD", error=TimeoutError, interval=0.05)  # fmt: skip
    took = time.monotonic() - start
    print(f"|   CPU s meanwhile, by program (all processes) | {cpu_spent(cpu)} | |", flush=True)
    return took


def prefixes_in_bird(c: Cluster) -> int:
    """Distinct prefixes of the `many` pool BIRD holds: `N of M routes for K networks in table
    T`, one line per table (the IPv6 one is the answer), the largest K."""
    out = c.bed.topology.birdc(f"show route where net ~ [ {MANY}+ ] count")
    counts = [0]
    for line in out.splitlines():
        words = line.split()
        if "networks" in words:
            counts.append(int(words[words.index("networks") - 1]))
    return max(counts)


def idle_cpu(c: Cluster, seconds: float, settle: float = 60.0) -> float:
    """CPU of every speaker and its ExaBGPs, per node, as a share of one core, once they are
    idle (under 5 % of a core per node over 2 s, waited for up to `settle` seconds: the
    conditions of a burst are still being written right after it)."""

    def rate(window: float) -> float:
        pids = c.pids()
        before = sum(cpu_s(p) for p in pids)
        time.sleep(window)  # the measuring window itself
        return (sum(cpu_s(p) for p in pids) - before) / window / len(c.speakers)

    wait_for(lambda: rate(2.0) < 0.05, settle, "the speakers to settle", error=TimeoutError,
             interval=0.0)  # fmt: skip
    return rate(seconds)


def cpu_by_pid() -> dict[int, tuple[str, float]]:
    """Every process's program (the script for an interpreter: exabgp, lbctl-speaker) and its
    CPU seconds so far."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv if a]
        if words and words[0].startswith("python") and len(words) > 1:
            words = words[1:] if words[1] != "-m" else words[2:]
        name = words[0] if words else "?"
        out[int(entry.name)] = (
            name,
            (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
        )
    return out


def cpu_spent(before: dict[int, tuple[str, float]], top: int = 6) -> str:
    """CPU seconds per program since `before` (processes alive at both ends), the largest."""
    spent: dict[str, float] = {}
    for pid, (name, cpu) in cpu_by_pid().items():
        if pid in before and before[pid][0] == name and pid != os.getpid():
            spent[name] = spent.get(name, 0.0) + cpu - before[pid][1]
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name} {cpu:.1f}" for name, cpu in ranked)


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan_cost(services: int, nodes: int = 3) -> tuple[float, float]:
    """In-process: seconds to plan `services` Services (plan_bgp) and to derive one node's routes
    (routes_for), as the speaker does on every change; the median of 3."""
    from lbctl.core.adapt import EndpointInfo, EndpointSliceInfo, HeldService, NodeInfo
    from lbctl.core.bgpplan import plan_bgp, routes_for
    from lbctl.core.model import (
        AddressRange,
        BGPAdvertisement,
        BGPPeer,
        Config,
        NodeName,
        PeerName,
        Pool,
        PoolName,
        ServiceKey,
    )  # fmt: skip

    first, last = MANY[1], MANY[services]
    pool = Pool(PoolName("many"), (AddressRange(first, last, f"{first}-{last}"),))
    peer = BGPPeer(PeerName("router6"), plan.NODE_ASN, plan.ROUTER_ASN, plan.GATEWAY6)
    cfg = Config(pools=(pool,), bgp_advertisements=(BGPAdvertisement("many"),), peers=(peer,))
    names = [NodeName(f"node-{i}") for i in range(1, nodes + 1)]
    known = [NodeInfo(n, ready=True) for n in names]
    held = [HeldService(ServiceKey(f"default/many-{i}"), (MANY[i + 1],)) for i in range(services)]
    endpoint = EndpointInfo((plan.GATEWAY4,), names[0], True, True, False)
    slices = {s.key: (EndpointSliceInfo(f"{s.key}-x", s.key, (endpoint,)),) for s in held}
    plans, routes = [], []
    for _ in range(3):
        start = time.perf_counter()
        planned = plan_bgp(cfg, held, slices, known)
        middle = time.perf_counter()
        table = routes_for(cfg, planned, known[0])
        plans.append(middle - start)
        routes.append(time.perf_counter() - middle)
        assert len(table.desired[peer.name]) == services
    return sorted(plans)[1], sorted(routes)[1]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI: small sizes")
    parser.add_argument("--many", type=int, default=None, help="Services for the routes run")
    args = parser.parse_args(argv)
    sizes = (10, 5.0, 1000, 100) if args.smoke else (100, 30.0, 10000, 1000)
    creates, idle_s, planned, many = sizes
    many = args.many or many
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# bench/bgp_speaker.py {'--smoke' if args.smoke else '(full)'}: {platform.node()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, {when}, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| measurement | result | target |\n|---|---|---|")
    ok = True
    plan_s, routes_s = plan_cost(planned)
    print(f"| plan {planned} Services (plan_bgp / routes_for, median of 3) | "
          f"{plan_s * 1000:.0f} / {routes_s * 1000:.0f} ms | |")  # fmt: skip
    with cluster() as c:
        times = create_to_route(c, creates)
        p50, p99 = pct(times, 50) * 1000, pct(times, 99) * 1000
        ok &= pct(times, 99) <= 0.5 or args.smoke
        print(f"| create -> route in the router's kernel table | p50 {p50:.0f} ms, p99 "
              f"{p99:.0f} ms (n={len(times)}) | p99 <= 500 ms |")  # fmt: skip
        made = create_many(c, many)
        print(f"| {many} IPv6 Services with endpoints created, all with IPs | {made:.1f} s | |")
        # three runs: the advertisement added, removed (all withdrawn), added again
        took = []
        for run in range(ADVERTISE_RUNS):
            if run:
                gone = advertise_many(c, many, timeout=60.0 + many / 100, on=False)
                print(f"| advertisement removed -> no route in BIRD | {gone:.2f} s | |")
            took.append(advertise_many(c, many, timeout=60.0 + many / 100))
            print(f"| advertisement added -> all {many} routes in BIRD (3 nodes, IPv6 "
                  f"sessions), run {run + 1} | {took[-1]:.2f} s | 10,000 <= 10 s |")  # fmt: skip
        ok &= max(took) <= 10.0 or args.smoke or many != 10000
        print(f"| advertisement added -> all {many} routes, median / worst of {len(took)} | "
              f"{statistics.median(took):.2f} / {max(took):.2f} s | 10,000 <= 10 s |")  # fmt: skip
        # settling includes the conditions the advertisement changed (two per Service)
        cpu = idle_cpu(c, idle_s, settle=60.0 + many / 20)
        print(f"| speaker + ExaBGPs idle CPU per node, {many + 1} routes, 2 sessions | "
              f"{cpu * 100:.2f} % of a core | <= 2 % |")  # fmt: skip
        ok &= cpu <= 0.02 or args.smoke
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
