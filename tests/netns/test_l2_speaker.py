"""The L2 speaker end to end on the bed: the real control plane, the controller and one
`lbctl-speaker` per node under its ServiceAccount. The client's own kernel resolves each VIP by
ARP/NDP; traffic goes client -> VIP -> the owner's kube-proxy -> a backend, with no stand-in on
the path. Faults are signals to a speaker's process, links set down, stopped kubelets."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client, config

from lbctl.core import election
from lbctl.core.model import NodeName
from lbctl.lab import agents, nsutil
from lbctl.lab.bed import Bed
from lbctl.lab.daemon import lab_config_text
from lbctl.lab.procs import wait_for

NS = "default"
CONDITION = "lbctl.io/AnnouncedL2"


@dataclass
class L2Bed:
    bed: Bed
    api: client.ApiClient
    speakers: dict[str, agents.Agent] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def mac(self, node: str) -> str:
        return self.bed.topology.node(node).host.mac

    def start_speaker(self, node: str) -> None:
        member = self.bed.topology.node(node)
        self.speakers[node] = agents.start_speaker(
            self.bed.topology, self.bed.control, member, self.bed.node_api_url
        )

    def signal_speaker(self, node: str, sig: signal.Signals) -> None:
        os.kill(self.speakers[node].proc.pid, sig)


@pytest.fixture(scope="module")
def l2(bed: Bed) -> Iterator[L2Bed]:
    control = bed.control
    agents.apply_rbac(control)
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lbctl-config", "namespace": "lbctl-system"},
        "data": {"config.yaml": lab_config_text()},
    }  # fmt: skip
    with config.new_client_from_config(str(bed.kubeconfig)) as api:
        client.CoreV1Api(api).create_namespaced_config_map("lbctl-system", configmap)
        agents.start_controller(bed.topology, control)
        the_bed = L2Bed(bed, api)
        for node in bed.topology.nodes:
            the_bed.start_speaker(node.name)
        yield the_bed


def deploy(api: client.ApiClient, name: str, replicas: int) -> None:
    labels = {"app": name}
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
              "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": labels}}  # fmt: skip
    client.AppsV1Api(api).create_namespaced_deployment(NS, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"topologySpreadConstraints": [spread], "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "web", "image": "lab",
                                     "ports": [{"containerPort": 8080}]}]}}}})  # fmt: skip


def expose(l2: L2Bed, name: str, **spec: Any) -> str:
    """A LoadBalancer Service; returns the IP the controller gave it."""
    body = {"metadata": {"name": name}, "spec": {
        "type": "LoadBalancer", "selector": {"app": name},
        "ports": [{"port": 80, "targetPort": 8080}], **spec}}  # fmt: skip
    l2.core.create_namespaced_service(NS, body)

    def ip() -> str | None:
        svc = l2.core.read_namespaced_service(name, NS)
        ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
        return ingress[0].ip if ingress else None

    found: str = wait_for(ip, 20.0, f"an IP on {name}")
    return found


def owner_of(l2: L2Bed, vip: str, nodes: list[str] | None = None) -> str:
    names = nodes or [n.name for n in l2.bed.topology.nodes]
    ranking = election.rank((NodeName(n) for n in names), ipaddress.ip_address(vip))
    return str(ranking[0])


def condition(l2: L2Bed, name: str) -> dict[str, Any] | None:
    raw = l2.core.read_namespaced_service(name, NS, _preload_content=False)
    body = json.loads(raw.data)
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == CONDITION:
            return dict(cond)
    return None


def ask(l2: L2Bed, vip: str, timeout: float = 1.0) -> dict[str, str]:
    """One TCP exchange from the client namespace (its kernel resolves the VIP itself)."""
    data = b""
    try:
        with nsutil.connect_tcp_in_netns(
            l2.bed.topology.client.netns, vip, 80, timeout=timeout
        ) as sock:
            sock.sendall(b"hello\n")
            while chunk := sock.recv(4096):
                data += chunk
    except (nsutil.NetnsError, OSError):
        return {}
    return dict(word.split("=", 1) for word in data.decode().split())


def client_mac(l2: L2Bed, vip: str) -> str | None:
    """The MAC the client's neighbour table holds for `vip` (None: no usable entry)."""
    out = nsutil.ip("neigh", "show", vip, netns=l2.bed.topology.client.netns)
    words = out.split()
    if "lladdr" not in words or "FAILED" in words:
        return None
    return words[words.index("lladdr") + 1]


def test_an_assigned_ip_resolves_to_its_owner_and_reaches_a_backend(l2: L2Bed) -> None:
    deploy(l2.api, "web", 3)
    vip = expose(l2, "web")
    owner = owner_of(l2, vip)
    answer = wait_for(lambda: ask(l2, vip), 15.0, f"an answer from {vip}")
    assert answer["pod"].startswith("web-")
    assert client_mac(l2, vip) == l2.mac(owner)
    cond = wait_for(
        lambda: (c := condition(l2, "web")) and c["status"] == "True" and c, 10.0, "AnnouncedL2"
    )
    assert cond["message"] == f"announced by {owner} on eth0"
    with l2.bed.topology.observe(vip) as observer:
        observer.wait_for(lambda ticks: len(ticks) >= 10, timeout=3)
    assert observer.distinct_macs() == {l2.mac(owner)}, "exactly one node answers"


def ranking_of(l2: L2Bed, vip: str) -> list[str]:
    names = [n.name for n in l2.bed.topology.nodes]
    return [str(n) for n in election.rank((NodeName(n) for n in names), ipaddress.ip_address(vip))]


def moved_to(l2: L2Bed, vip: str, node: str, timeout: float) -> float:
    """Seconds until the client's neighbour entry for `vip` points at `node` (its kernel learns
    it from the new owner's gratuitous ARP: the entry exists already)."""
    start = time.monotonic()
    wait_for(lambda: client_mac(l2, vip) == l2.mac(node), timeout, f"{vip} moved to {node}",
             interval=0.01)  # fmt: skip
    return time.monotonic() - start


def test_a_killed_owner_is_replaced_by_rank_two_within_a_second(l2: L2Bed) -> None:
    deploy(l2.api, "kill", 3)
    vip = expose(l2, "kill")
    first, second = ranking_of(l2, vip)[:2]
    wait_for(lambda: ask(l2, vip), 15.0, f"an answer from {vip}")
    assert client_mac(l2, vip) == l2.mac(first)
    l2.signal_speaker(first, signal.SIGKILL)
    try:
        took = moved_to(l2, vip, second, 3.0)
        assert took < 1.5, f"took over after {took:.2f} s"
        assert wait_for(lambda: ask(l2, vip), 5.0, "traffic after the takeover")
    finally:
        l2.speakers[first].proc.wait(5)
        l2.start_speaker(first)
    # The restarted owner waits for the hand-back (5 s of answers), then takes its IP back.
    moved_to(l2, vip, first, 12.0)
    assert wait_for(lambda: ask(l2, vip), 5.0, "traffic after the hand-back")


def test_sigterm_hands_over_before_the_speaker_stops(l2: L2Bed) -> None:
    deploy(l2.api, "term", 3)
    vip = expose(l2, "term")
    first, second = ranking_of(l2, vip)[:2]
    wait_for(lambda: ask(l2, vip), 15.0, f"an answer from {vip}")
    l2.signal_speaker(first, signal.SIGTERM)
    try:
        took = moved_to(l2, vip, second, 2.0)
        assert took < 1.0, f"handed over after {took:.2f} s"
        assert l2.speakers[first].proc.wait(10) == 0
    finally:
        l2.start_speaker(first)
    moved_to(l2, vip, first, 12.0)
