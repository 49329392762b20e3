"""The L2 test bed works: nodes reach the API on their own loopback, backends answer through
VIPs the way kube-proxy would route them, endpoints follow backends and nodes, the observer
counts responders, and teardown leaves nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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
    labels = {"app": name}
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
                        "containers": [
                            {"name": "web", "image": "lab", "ports": [{"containerPort": port}]}
                        ]
                    },
                },
            },
        },
    )


def expose(api: client.ApiClient, name: str, vip: str, *, local: bool = False) -> None:
    """A LoadBalancer Service whose ingress the test writes itself (no controller here)."""
    core = client.CoreV1Api(api)
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": {"app": name},
        "ports": [{"port": 80, "targetPort": 8080}],
    }
    if local:
        spec["externalTrafficPolicy"] = "Local"
    core.create_namespaced_service(NS, {"metadata": {"name": name}, "spec": spec})
    core.patch_namespaced_service_status(
        name, NS, {"status": {"loadBalancer": {"ingress": [{"ip": vip}]}}}
    )


def point_vip_at(bed: Bed, vip: str, node: str) -> None:
    """What a speaker's ARP reply would do for the client: a neighbour entry, set by hand."""
    netns = bed.topology.client.netns
    mac = bed.topology.node(node).host.mac
    nsutil.ip("route", "replace", vip, "dev", "eth0", netns=netns)
    nsutil.ip(
        "neigh", "replace", vip, "lladdr", mac, "dev", "eth0", "nud", "permanent", netns=netns
    )


def ask(bed: Bed, vip: str, port: int = 80) -> dict[str, str]:
    """One TCP exchange from the client namespace; the backend's `key=value` line, or {}."""
    data = b""
    with nsutil.connect_tcp_in_netns(bed.topology.client.netns, vip, port) as sock:
        try:
            sock.sendall(b"hello\n")
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            return {}  # a proxy with no backend closed on us before reading our bytes
    return dict(word.split("=", 1) for word in data.decode().split())


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


def ready_pods(
    bed: Bed, api: client.ApiClient, name: str, count: int
) -> dict[str, tuple[str, bool]]:
    """Wait for `count` ready endpoints, then for one more kubelet pass so proxies caught up."""
    assert bed.kubelet is not None
    eps: dict[str, tuple[str, bool]] = wait_until(
        lambda: (e := slice_endpoints(api, name)) and sum(r for _, r in e.values()) == count and e,
        what=f"{count} ready endpoints of {name}",
    )
    bed.kubelet.sync()
    return eps


def test_nodes_list_services_through_loopback_of_their_own_namespace(
    bed: Bed, api: client.ApiClient
) -> None:
    client.CoreV1Api(api).create_namespaced_service(
        NS, {"metadata": {"name": "seen-by-nodes"}, "spec": {"ports": [{"port": 81}]}}
    )
    for node in bed.topology.nodes:
        kubeconfig = bed.node_kubeconfig(node.name)
        out = nsutil.ip_netns_exec(
            node.netns, KUBECTL, "--kubeconfig", str(kubeconfig),
            "get", "services", "-o", "name",
        )  # fmt: skip
        assert "service/seen-by-nodes" in out.split()
        # kubectl sends no bearer token over plain HTTP, so tell requests apart by listener.
        paths = {r.path for r in bed.api.requests() if r.source == node.name}
        assert "/api/v1/namespaces/default/services" in paths


def test_nodes_are_registered_with_addresses_and_ready(bed: Bed, api: client.ApiClient) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    node = nodes["node-2"]
    assert node.metadata.labels["kubernetes.io/hostname"] == "node-2"
    internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
    assert internal == ["192.0.2.12", "2001:db8::12"]
    assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "True")]


def test_cluster_policy_spreads_connections_over_every_node(
    bed: Bed, api: client.ApiClient
) -> None:
    deploy(api, "spread", replicas=3)
    expose(api, "spread", "192.0.2.201")
    eps = ready_pods(bed, api, "spread", 3)
    assert sorted(node for node, _ in eps.values()) == ["node-1", "node-2", "node-3"]
    point_vip_at(bed, "192.0.2.201", "node-1")
    answers = [ask(bed, "192.0.2.201") for _ in range(6)]
    assert {a["node"] for a in answers} == {"node-1", "node-2", "node-3"}
    assert {a["pod"] for a in answers} == set(eps)


def test_ipv6_vip_and_far_vip_reach_backends(bed: Bed, api: client.ApiClient) -> None:
    deploy(api, "dual", replicas=1)
    core = client.CoreV1Api(api)
    expose(api, "dual", "2001:db8::202")
    core.patch_namespaced_service_status(
        "dual",
        NS,
        {
            "status": {
                "loadBalancer": {"ingress": [{"ip": "2001:db8::202"}, {"ip": "203.0.113.202"}]}
            }
        },
    )
    ready_pods(bed, api, "dual", 1)
    point_vip_at(bed, "2001:db8::202", "node-2")
    point_vip_at(bed, "203.0.113.202", "node-3")
    assert ask(bed, "2001:db8::202")["pod"].startswith("dual-")
    assert ask(bed, "203.0.113.202")["pod"].startswith("dual-")


def test_local_policy_reaches_only_backends_on_the_receiving_node(
    bed: Bed, api: client.ApiClient
) -> None:
    deploy(api, "local", replicas=1)
    expose(api, "local", "192.0.2.203", local=True)
    eps = ready_pods(bed, api, "local", 1)
    [(pod, (home, _))] = eps.items()
    other = next(n.name for n in bed.topology.nodes if n.name != home)
    point_vip_at(bed, "192.0.2.203", other)
    assert ask(bed, "192.0.2.203") == {}, "a node without a local backend must not forward"
    point_vip_at(bed, "192.0.2.203", home)
    answers = [ask(bed, "192.0.2.203") for _ in range(3)]
    assert {(a["node"], a["pod"]) for a in answers} == {(home, pod)}


def test_stopping_a_backend_turns_its_endpoint_not_ready(bed: Bed, api: client.ApiClient) -> None:
    assert bed.kubelet is not None
    deploy(api, "flaky", replicas=2)
    expose(api, "flaky", "192.0.2.204")
    eps = ready_pods(bed, api, "flaky", 2)
    victim, survivor = sorted(eps)
    pid = bed.kubelet.backends()[(NS, victim)]["pid"]
    bed.kubelet.stop_backend(NS, victim)
    assert proc_start_time(pid) is None, "the backend process is gone"
    after = slice_endpoints(api, "flaky")
    assert after[victim][1] is False
    assert after[survivor][1] is True
    pod = client.CoreV1Api(api).read_namespaced_pod(victim, NS)
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
    point_vip_at(bed, "192.0.2.204", eps[victim][0])
    assert {ask(bed, "192.0.2.204")["pod"] for _ in range(4)} == {survivor}
    bed.kubelet.start_backend(NS, victim)
    assert slice_endpoints(api, "flaky")[victim][1] is True


def test_node_not_ready_taints_it_and_unreadies_its_endpoints(
    bed: Bed, api: client.ApiClient
) -> None:
    assert bed.kubelet is not None
    deploy(api, "spread2", replicas=3)
    expose(api, "spread2", "192.0.2.205")
    ready_pods(bed, api, "spread2", 3)
    bed.kubelet.set_node_ready("node-3", False)
    try:
        node = client.CoreV1Api(api).read_node("node-3")
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "False"
        assert {(t.key, t.effect) for t in node.spec.taints} == {
            ("node.kubernetes.io/not-ready", "NoSchedule"),
            ("node.kubernetes.io/not-ready", "NoExecute"),
        }
        eps = slice_endpoints(api, "spread2")
        assert dict(eps.values()) == {
            "node-1": True, "node-2": True, "node-3": False,
        }  # fmt: skip
    finally:
        bed.kubelet.set_node_ready("node-3", True)
    assert client.CoreV1Api(api).read_node("node-3").spec.taints is None
    assert all(ready for _, ready in slice_endpoints(api, "spread2").values())


def test_scaling_down_stops_the_extra_backends(bed: Bed, api: client.ApiClient) -> None:
    assert bed.kubelet is not None
    deploy(api, "shrink", replicas=3)
    expose(api, "shrink", "192.0.2.206")
    ready_pods(bed, api, "shrink", 3)
    pids = {k: v["pid"] for k, v in bed.kubelet.backends().items() if k[1].startswith("shrink-")}
    client.AppsV1Api(api).patch_namespaced_deployment("shrink", NS, {"spec": {"replicas": 1}})
    eps = wait_until(
        lambda: len(e := slice_endpoints(api, "shrink")) == 1 and e, what="one endpoint left"
    )
    gone = [pid for key, pid in pids.items() if key[1] not in eps]
    assert len(gone) == 2
    assert all(proc_start_time(pid) is None for pid in gone)


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
            small.kubelet.sync()
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
