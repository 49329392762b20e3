"""The bed works on the real control plane: nodes reach the API on their own loopback, the real
scheduler places pods that the kubelet stand-in runs, the real EndpointSlice controller and
kube-proxy carry traffic to them (externalTrafficPolicy Local included), a stopped kubelet makes
its Node NotReady, the observer counts responders, and teardown leaves nothing."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import ask
from kubernetes import client, config

from lbctl.lab import nsutil, plan
from lbctl.lab.bed import Bed
from lbctl.lab.l2probe import VipResponder
from lbctl.lab.procs import wait_for
from lbctl.lab.runstate import cleanup_run, proc_start_time
from lbctl.lab.topology import Topology

NS = "default"
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    return wait_for(check, timeout, what, interval=0.05)


@pytest.fixture(scope="module")
def api(bed: Bed) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(str(bed.kubeconfig)) as api_client:
        yield api_client


def deploy(api: client.ApiClient, name: str, replicas: int, port: int = 8080) -> None:
    """A Deployment whose pods the real scheduler spreads one per node (a hard constraint)."""
    labels = {"app": name}
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": labels},
    }
    client.AppsV1Api(api).create_namespaced_deployment(
        NS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "topologySpreadConstraints": [spread],
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {"name": "web", "image": "lab", "ports": [{"containerPort": port}]}
                        ],
                    },
                },
            },
        },
    )


def expose(api: client.ApiClient, name: str, vip: str, *, local: bool = False) -> dict[str, Any]:
    """A LoadBalancer Service whose ingress the test writes itself: this module tests the bed
    (kube-proxy's rules for an ingress IP), with no lbctl controller running."""
    core = client.CoreV1Api(api)
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": {"app": name},
        "ports": [{"port": 80, "targetPort": 8080}],
    }
    if local:
        spec["externalTrafficPolicy"] = "Local"
    created = core.create_namespaced_service(NS, {"metadata": {"name": name}, "spec": spec})
    core.patch_namespaced_service_status(
        name, NS, {"status": {"loadBalancer": {"ingress": [{"ip": vip}]}}}
    )
    return api.sanitize_for_serialization(created)  # type: ignore[no-any-return]


def point_vip_at(bed: Bed, vip: str, node: str) -> None:
    """What a speaker's ARP reply would do for the client: a neighbour entry, set by the test
    (the bed's own test: no speaker runs here)."""
    netns = bed.topology.client.netns
    mac = bed.topology.node(node).host.mac
    nsutil.ip("route", "replace", vip, "dev", "eth0", netns=netns)
    nsutil.ip(
        "neigh", "replace", vip, "lladdr", mac, "dev", "eth0", "nud", "permanent", netns=netns
    )


def answers_until(
    bed: Bed, vip: str, want: Callable[[list[dict[str, str]]], bool]
) -> list[dict[str, str]]:
    """Ask again and again (at most 60 times, 20 s) until the answers so far satisfy `want`."""
    seen: list[dict[str, str]] = []

    def enough() -> bool:
        if len(seen) < 60:
            seen.append(ask(bed, vip))
        return want(seen)

    wait_until(enough, 20.0, f"answers for {vip}")
    return seen


def slice_endpoints(api: client.ApiClient, service: str) -> dict[str, tuple[str, bool]]:
    """pod name -> (node, ready) from the Service's EndpointSlices."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        NS, label_selector=f"kubernetes.io/service-name={service}"
    )
    return {
        ep.target_ref.name: (ep.node_name, bool(ep.conditions.ready))
        for s in slices.items
        for ep in s.endpoints or []
    }


def ready_pods(api: client.ApiClient, name: str, count: int) -> dict[str, tuple[str, bool]]:
    """Wait until the real EndpointSlice controller lists `count` ready endpoints."""
    eps: dict[str, tuple[str, bool]] = wait_until(
        lambda: (e := slice_endpoints(api, name)) and sum(r for _, r in e.values()) == count and e,
        30.0,
        f"{count} ready endpoints of {name}",
    )
    return eps


def ready_pod_nodes(api: client.ApiClient, app: str, count: int) -> dict[str, str]:
    """Wait until exactly `count` pods of `app` exist and are Ready; pod name -> node."""

    def ready() -> dict[str, str]:
        pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=f"app={app}").items
        done = {
            p.metadata.name: p.spec.node_name
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        }
        return done if len(done) == len(pods) == count else {}

    found: dict[str, str] = wait_until(ready, 30.0, f"{count} ready pods of {app}")
    return found


def audit(bed: Bed) -> list[dict[str, Any]]:
    lines = bed.control.audit_log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def health(bed: Bed, node: str, port: int) -> tuple[int, dict[str, Any]]:
    """kube-proxy's healthCheckNodePort answer on `node`, asked from the client namespace."""
    addr = str(bed.topology.node(node).host.addr4)

    def get() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://{addr}:{port}/", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        except urllib.error.URLError:
            return 0, {}  # not listening yet: kube-proxy opens the port on its next sync

    return nsutil.run_in_netns(bed.topology.client.netns, get)


def test_nodes_reach_the_api_through_their_own_loopback(bed: Bed, api: client.ApiClient) -> None:
    client.CoreV1Api(api).create_namespaced_service(
        NS, {"metadata": {"name": "seen-by-nodes"}, "spec": {"ports": [{"port": 81}]}}
    )
    for node in bed.topology.nodes:
        kubeconfig = bed.node_kubeconfig(node.name, f"reader-{node.name}", ["system:masters"])
        out = nsutil.ip_netns_exec(
            node.netns, KUBECTL, "--kubeconfig", str(kubeconfig),
            "get", "services", "-o", "name",
        )  # fmt: skip
        assert "service/seen-by-nodes" in out.split()
    users = {e["user"]["username"] for e in audit(bed) if e["verb"] == "list"}
    assert {f"reader-{n.name}" for n in bed.topology.nodes} <= users


def test_nodes_are_registered_ready_with_their_leases(bed: Bed, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    node = nodes["node-2"]
    assert node.metadata.labels["kubernetes.io/hostname"] == "node-2"
    internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
    assert internal == ["192.0.2.12", "2001:db8::12"]
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert not node.spec.taints, "the node lifecycle controller lifted not-ready"
    lease = client.CoordinationV1Api(api).read_namespaced_lease("node-2", "kube-node-lease")
    assert lease.spec.holder_identity == "node-2"


def test_pods_are_scheduled_by_kube_scheduler_and_run_on_their_node(
    bed: Bed, api: client.ApiClient
) -> None:
    assert bed.kubelet is not None
    deploy(api, "placed", replicas=3)
    placed = ready_pod_nodes(api, "placed", 3)
    assert sorted(placed.values()) == ["node-1", "node-2", "node-3"]
    events = client.CoreV1Api(api).list_namespaced_event(NS).items
    scheduled = {e.involved_object.name for e in events if e.reason == "Scheduled"}
    assert set(placed) <= scheduled
    runs = bed.kubelet.backends()
    assert {pod: runs[(NS, pod)]["node"] for pod in placed} == placed
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=placed"
    )
    assert slices.items == [], "no Service, no slice (nobody but the real controller writes them)"


def test_cluster_policy_spreads_connections_over_every_node(
    bed: Bed, api: client.ApiClient
) -> None:
    deploy(api, "spread", replicas=3)
    svc = expose(api, "spread", "192.0.2.201")
    eps = ready_pods(api, "spread", 3)
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=spread"
    )
    managers = {s.metadata.labels["endpointslice.kubernetes.io/managed-by"] for s in slices.items}
    assert managers == {"endpointslice-controller.k8s.io"}
    point_vip_at(bed, "192.0.2.201", "node-1")
    seen = answers_until(bed, "192.0.2.201", lambda s: {a.get("pod") for a in s} >= set(eps))
    assert {a["node"] for a in seen if a} == {"node-1", "node-2", "node-3"}
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert ask(bed, "192.0.2.12", node_port)["pod"] in eps, "the node port reaches a backend"


def test_local_policy_drops_on_nodes_without_a_backend_and_keeps_the_client_address(
    bed: Bed, api: client.ApiClient
) -> None:
    deploy(api, "local", replicas=1)
    svc = expose(api, "local", "192.0.2.203", local=True)
    eps = ready_pods(api, "local", 1)
    [(pod, (home, _))] = eps.items()
    other = next(n.name for n in bed.topology.nodes if n.name != home)
    hc_port = svc["spec"]["healthCheckNodePort"]
    _, body = wait_until(
        lambda: (h := health(bed, home, hc_port))[0] == 200 and h, 20.0, "health 200 at home"
    )
    assert body["localEndpoints"] == 1
    code, body = wait_until(lambda: (h := health(bed, other, hc_port))[0] and h, 10.0, "other")
    assert (code, body["localEndpoints"]) == (503, 0)
    point_vip_at(bed, "192.0.2.203", home)
    seen = answers_until(bed, "192.0.2.203", lambda s: len([a for a in s if a]) >= 3)
    answered = [a for a in seen if a]
    assert {(a["node"], a["pod"]) for a in answered} == {(home, pod)}
    client_ip = str(bed.topology.client.host.addr4)
    assert {a["client"].rsplit(":", 1)[0] for a in answered} == {client_ip}
    point_vip_at(bed, "192.0.2.203", other)
    assert ask(bed, "192.0.2.203") == {}, "a node without a local backend must drop"


def test_stopping_a_backend_turns_its_endpoint_not_ready(bed: Bed, api: client.ApiClient) -> None:
    assert bed.kubelet is not None
    deploy(api, "flaky", replicas=2)
    expose(api, "flaky", "192.0.2.204")
    eps = ready_pods(api, "flaky", 2)
    victim, survivor = sorted(eps)
    pid = bed.kubelet.backends()[(NS, victim)]["pid"]
    bed.kubelet.stop_backend(NS, victim)
    assert proc_start_time(pid) is None, "the backend process is gone"
    after = wait_until(
        lambda: (e := slice_endpoints(api, "flaky"))[victim][1] is False and e,
        10.0,
        f"{victim} not ready in the slice",
    )
    assert after[survivor][1] is True
    pod = client.CoreV1Api(api).read_namespaced_pod(victim, NS)
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
    bed.kubelet.start_backend(NS, victim)
    ready_pods(api, "flaky", 2)


def test_a_stopped_kubelet_makes_its_node_not_ready_tainted_and_its_endpoints_not_ready(
    bed: Bed, api: client.ApiClient
) -> None:
    assert bed.kubelet is not None
    core = client.CoreV1Api(api)
    deploy(api, "spread2", replicas=3)
    expose(api, "spread2", "192.0.2.205")
    ready_pods(api, "spread2", 3)
    stopped = time.monotonic()
    bed.kubelet.stop_node("node-3")
    try:
        unreachable = {
            ("node.kubernetes.io/unreachable", "NoSchedule"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
        }

        def tainted() -> Any:
            node = core.read_node("node-3")
            return {(t.key, t.effect) for t in node.spec.taints or []} >= unreachable and node

        node = wait_until(
            tainted,
            20.0,
            "node-3 tainted unreachable (NoSchedule and NoExecute)",
        )
        took = time.monotonic() - stopped
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "Unknown"
        # The grace period is 5 s; the controller-manager notices within its 1 s period.
        assert took < 5 + 1 + 3, f"NotReady after {took:.1f} s"
        eps = wait_until(
            lambda: (
                (e := slice_endpoints(api, "spread2"))
                and dict(e.values()) == {"node-1": True, "node-2": True, "node-3": False}
                and e
            ),
            10.0,
            "node-3's endpoint not ready",
        )
        assert len(eps) == 3
    finally:
        bed.kubelet.start_node("node-3")
    wait_until(lambda: not core.read_node("node-3").spec.taints, 20.0, "taints lifted")
    ready_pods(api, "spread2", 3)


def test_scaling_down_stops_the_extra_backends(bed: Bed, api: client.ApiClient) -> None:
    assert bed.kubelet is not None
    deploy(api, "shrink", replicas=3)
    ready_pod_nodes(api, "shrink", 3)
    pids = {k: v["pid"] for k, v in bed.kubelet.backends().items() if k[1].startswith("shrink-")}
    client.AppsV1Api(api).patch_namespaced_deployment("shrink", NS, {"spec": {"replicas": 1}})
    left = wait_until(
        lambda: len(p := client.CoreV1Api(api).list_namespaced_pod(
            NS, label_selector="app=shrink").items) == 1 and p,
        20.0,
        "one pod left",
    )  # fmt: skip
    gone = [pid for key, pid in pids.items() if key[1] != left[0].metadata.name]
    assert len(gone) == 2
    wait_until(lambda: all(proc_start_time(pid) is None for pid in gone), 5.0, "processes gone")


def test_observer_counts_distinct_macs_answering_for_a_vip(bed: Bed) -> None:
    topo = bed.topology
    n1, n2 = topo.nodes[0], topo.nodes[1]
    vip = "192.0.2.230"
    with topo.observe(vip) as observer:
        observer.wait_for(lambda ticks: len(ticks) >= 2, timeout=2)
        assert observer.distinct_macs() == set(), "nobody answers for an unused VIP"
        with VipResponder(n1.netns, vip, n1.host.mac):
            since = time.monotonic()
            observer.wait_for(lambda t: any(x.at >= since and x.macs for x in t), timeout=2)
            with VipResponder(n2.netns, vip, n2.host.mac):
                both = time.monotonic()
                observer.wait_for(
                    lambda t: any(x.at >= both and len(x.macs) == 2 for x in t), timeout=2
                )
        assert observer.distinct_macs(since) == {n1.host.mac, n2.host.mac}


def test_observer_counts_ipv6_responders_too(bed: Bed) -> None:
    topo = bed.topology
    n3 = topo.nodes[2]
    with (
        topo.observe("2001:db8::230") as observer,
        VipResponder(n3.netns, "2001:db8::230", n3.host.mac),
    ):
        ticks = observer.wait_for(lambda t: any(x.macs for x in t), timeout=2)
    assert {m for t in ticks for m in t.macs} == {n3.host.mac}


def test_teardown_removes_namespaces_and_processes() -> None:
    with Bed(nodes=2) as small:
        runid = small.topology.runid
        assert small.kubelet is not None
        with config.new_client_from_config(str(small.kubeconfig)) as api:
            deploy(api, "gone", replicas=2)
            ready_pod_nodes(api, "gone", 2)
            pids = [b["pid"] for b in small.kubelet.backends().values()]
        ours = [ns for ns in nsutil.list_netns() if plan.runid_of(ns) == runid]
        assert len(ours) == 7
        run_dir = small.topology.run_dir
    assert len(pids) == 2
    assert all(proc_start_time(pid) is None for pid in pids)
    assert [ns for ns in nsutil.list_netns() if plan.runid_of(ns) == runid] == []
    assert not run_dir.exists()


def test_cleanup_run_finishes_a_crashed_run_from_its_state_file() -> None:
    topo = Topology(nodes=1).up()
    try:
        proc = topo.spawn(topo.nodes[0].netns, ["sleep", "30"], role="stray")
        run_dir, runid = topo.run_dir, topo.runid
        topo._state = None  # what a crash leaves: no in-memory handle, only the state file
        state = cleanup_run(run_dir)
        assert state is not None and state.runid == runid
        assert proc.wait(timeout=5) is not None
        assert [ns for ns in nsutil.list_netns() if plan.runid_of(ns) == runid] == []
        assert not run_dir.exists()
    finally:
        topo.down()
        cleanup_run(topo.run_dir)
