"""`lbctl lab up / demo / status / down` run as a user runs them (the installed console script, as
subprocesses): the lab comes up with a working kubeconfig, the demo's Service gets an address and
the client reaches a backend through it, and down leaves no namespace, process or file."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbctl.cli.main import main
from lbctl.core import election
from lbctl.core.model import NodeName
from lbctl.lab import nsutil, plan
from lbctl.lab.runstate import ProcRecord, RunState, cleanup_run, proc_start_time, still_ours

BIN = Path(sys.executable).parent
LBCTL = str(BIN / "lbctl")
KUBECTL = str(BIN / "kubectl")
POOL4 = (ipaddress.IPv4Address("192.0.2.200"), ipaddress.IPv4Address("192.0.2.250"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces)")


def lab(root: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LBCTL, "lab", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Run:
    root: Path
    runid: str

    @property
    def run_dir(self) -> Path:
        return self.root / self.runid

    def state(self) -> RunState:
        return RunState.from_json((self.run_dir / "state.json").read_text())

    def ready(self) -> dict[str, object]:
        info: dict[str, object] = json.loads((self.run_dir / "ready.json").read_text())
        return info

    def namespaces(self) -> list[str]:
        return [ns for ns in nsutil.list_netns() if plan.runid_of(ns) == self.runid]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """A fresh root and run id; whatever happens, `lab down` and cleanup_run afterwards."""
    the_run = Run(tmp_path / "lab", plan.new_runid())
    try:
        yield the_run
    finally:
        lab(the_run.root, "down", "--runid", the_run.runid, timeout=60)
        cleanup_run(the_run.run_dir)
        for netns in the_run.namespaces():  # a crash before the state file listed it
            nsutil.ip("netns", "del", netns, check=False)


def kubectl(run: Run, *args: str) -> str:
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(run.run_dir / "kubeconfig"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def live(records: list[ProcRecord]) -> list[ProcRecord]:
    return still_ours(records, proc_start_time)


def wait_gone(records: list[ProcRecord], timeout: float = 5.0) -> list[ProcRecord]:
    """Processes of `records` still alive after `timeout` (backends exit within 0.5 s of their
    kubelet)."""
    deadline = time.monotonic() + timeout
    while (left := live(records)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def ask_from_client(run: Run, vip: str) -> dict[str, str]:
    """One HTTP GET from the client namespace (its kernel resolves the VIP by ARP)."""
    netns = f"lbctl-{run.runid}-client"
    with nsutil.connect_tcp_in_netns(netns, vip, 80) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        data = b"".join(iter(lambda: sock.recv(4096), b""))
    answer: dict[str, str] = json.loads(data.partition(b"\r\n\r\n")[2])
    return answer


def assert_up_and_usable(run: Run, up: subprocess.CompletedProcess[str]) -> None:
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"export KUBECONFIG={run.run_dir / 'kubeconfig'}" in up.stdout
    assert (run.root / "current").read_text().strip() == run.runid
    assert len(run.namespaces()) == 8  # lan, 3 nodes, router, client, observer, far
    assert "kube-apiserver: Kubernetes v1.37.2" in up.stdout
    assert kubectl(run, "get", "nodes", "-o", "name").split() == [
        "node/node-1", "node/node-2", "node/node-3",
    ]  # fmt: skip
    config = kubectl(run, "-n", "lbctl-system", "get", "configmap", "lbctl-config", "-o", "json")
    assert "192.0.2.200-192.0.2.250" in json.loads(config)["data"]["config.yaml"]


def controller_requests(run: Run) -> list[dict[str, object]]:
    """The API server's audit entries of the controller's ServiceAccount."""
    user = "system:serviceaccount:lbctl-system:lbctl-controller"
    lines = (run.run_dir / "logs" / "audit.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if user in line]
    return [e for e in entries if e["user"]["username"] == user]


def _status(entry: dict[str, object]) -> object:
    status = entry.get("responseStatus")
    return status.get("code") if isinstance(status, dict) else None


def assert_demo_served(run: Run, demo: subprocess.CompletedProcess[str]) -> None:
    """The controller gave the Service an address from the pool that reaches its pods, under
    its own ServiceAccount, with no request refused."""
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "$ kubectl expose deployment web --port=80 --target-port=8080" in demo.stdout
    vip = kubectl(run, "get", "svc", "web", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
    controller = run.ready()["controller"]
    assert isinstance(controller, dict) and controller["running"], controller
    assert POOL4[0] <= ipaddress.IPv4Address(vip) <= POOL4[1]
    assert "lbctl.io/IPAllocated  True" in demo.stdout
    assert "IPAllocated" in kubectl(run, "get", "events", "-o", "jsonpath={..reason}")
    requests = controller_requests(run)
    writes = [r for r in requests if r["verb"] in ("create", "update", "patch")]
    assert any(str(r["requestURI"]).endswith("/services/web/status") for r in writes)
    refused = [f"{r['verb']} {r['requestURI']}" for r in requests if _status(r) == 403]
    assert refused == [], "the controller's ServiceAccount lacks a rule in deploy/rbac.yaml"
    pods = set(kubectl(run, "get", "pods", "-l", "app=web", "-o", "name").split())
    assert {f"pod/{ask_from_client(run, vip)['pod']}" for _ in range(3)} <= pods
    assert "reached: node-" in demo.stdout
    # Resolved by ARP from the owning speaker, not set by hand: a learned (not PERMANENT) entry
    # with the MAC of the node that ranks first for the IP.
    owner = election.rank([NodeName(f"node-{i}") for i in (1, 2, 3)], ipaddress.ip_address(vip))[0]
    neigh = nsutil.ip("neigh", "show", vip, netns=f"lbctl-{run.runid}-client").split()
    nodes = run.ready()["nodes"]
    assert isinstance(nodes, dict)
    assert neigh[neigh.index("lladdr") + 1] == nodes[owner]["mac"] and "PERMANENT" not in neigh
    assert f"lbctl.io/AnnouncedL2  True  announced {vip} by node {owner} on eth0" in demo.stdout


def assert_nothing_left(run: Run, procs: list[ProcRecord]) -> None:
    assert run.namespaces() == []
    assert wait_gone(procs) == []
    assert not run.run_dir.exists()
    assert not (run.root / "current").exists()


@pytest.mark.timeout(240)
def test_up_demo_down_serves_a_load_balancer_and_leaves_nothing(run: Run) -> None:
    assert_up_and_usable(run, lab(run.root, "up", "--runid", run.runid))
    second = lab(run.root, "up")
    assert second.returncode == 1
    assert f"a lab is already running (run {run.runid})" in second.stderr

    assert_demo_served(run, lab(run.root, "demo"))
    again = lab(run.root, "demo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deployment web exists already" in again.stdout
    assert f"lab {run.runid} (current): running" in lab(run.root, "status").stdout

    procs = run.state().procs
    assert {"lab-daemon", "speaker-node-1", "speaker-node-2", "speaker-node-3"} <= {
        p.role for p in procs
    }
    assert sum(p.role.startswith("pod:default/web-") for p in procs) == 3
    down = lab(run.root, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"lab {run.runid} stopped" in down.stdout
    assert_nothing_left(run, procs)


@pytest.mark.timeout(120)
def test_down_cleans_up_after_the_daemon_was_killed(run: Run) -> None:
    up = lab(run.root, "up", "--runid", run.runid, "--nodes", "1", "--no-controller")
    assert up.returncode == 0, up.stdout + up.stderr
    kubectl(run, "create", "deployment", "crash", "--image=lab", "--replicas=1")
    deadline = time.monotonic() + 30  # scheduled by kube-scheduler, run by the kubelet stand-in
    while not any(p.role.startswith("pod:") for p in run.state().procs):
        assert time.monotonic() < deadline, "no backend started"
        time.sleep(0.05)
    procs = run.state().procs
    daemon = next(p for p in procs if p.role == "lab-daemon")
    os.kill(daemon.pid, signal.SIGKILL)
    assert wait_gone([daemon]) == []

    status = lab(run.root, "status")
    assert "NOT RUNNING" in status.stdout
    refused = lab(run.root, "up")
    assert refused.returncode == 1
    assert "stopped without cleaning up" in refused.stderr

    down = lab(run.root, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "its daemon was not running" in down.stdout
    assert_nothing_left(run, procs)


@pytest.mark.parametrize("action", ["up", "demo", "down"])
def test_lab_without_root_says_so_and_touches_nothing(
    action: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["lab", action, "--root", str(tmp_path / "lab")]) == 1
    assert "the lab needs root" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
