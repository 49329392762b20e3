"""lbctl's own processes on the bed, as a user runs them: `lbctl-controller` on the host and one
`lbctl-speaker` per node namespace, each under its ServiceAccount from deploy/rbac.yaml, each
ready once the API server's audit log shows it watching Services; used by the lab and the tests.

A process that exits before it is ready fails the start with the last lines of its own log: no
test or lab goes on without the component it needs.
"""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lbctl.lab import nsutil
from lbctl.lab.controlplane import ControlPlane
from lbctl.lab.procs import log_tail
from lbctl.lab.topology import NodeMember, Topology

RBAC_MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
NAMESPACE = "lbctl-system"
CONFIG_MAP = f"{NAMESPACE}/lbctl-config"
READY_TIMEOUT = 30.0  # kopf needs 1-3 s; a cold import of the kubernetes client is slow
PROBE_PORT = 7946
NODE_METRICS = "127.0.0.1:7472"  # inside each node namespace: every node has its own loopback
BIN = Path(sys.executable).parent


class AgentError(RuntimeError):
    """An lbctl process did not come up; the message quotes its log."""


@dataclass
class Agent:
    """A running lbctl process on the bed."""

    role: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics: str  # host:port of its /metrics (inside its namespace for a speaker)
    netns: str | None = None


def apply_rbac(control: ControlPlane) -> None:
    control.kubectl("apply", "-f", str(RBAC_MANIFEST))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def watching_services(audit_log: Path, user: str) -> bool:
    """Whether the audit log shows `user` watching Services."""
    try:
        lines = audit_log.read_text().splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        if f'"{user}"' not in line or '"watch"' not in line:
            continue
        entry = json.loads(line)
        if (
            (entry.get("user") or {}).get("username") == user
            and entry.get("verb") == "watch"
            and entry.get("requestURI", "").startswith("/api/v1/services")
        ):
            return True
    return False


def _wait_ready(agent: Agent, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    problem = f"was not ready ({what}) within {READY_TIMEOUT:.0f} s"
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            problem = f"exited with code {agent.proc.returncode}"
            break
        if ready():
            return
        time.sleep(0.1)
    raise AgentError(f"the {agent.role} {problem}; {agent.log} ends with:\n{log_tail(agent.log)}")


def start_controller(topology: Topology, control: ControlPlane) -> Agent:
    """lbctl-controller with a token of ServiceAccount lbctl-system/lbctl-controller."""
    kubeconfig = control.service_account_kubeconfig(
        NAMESPACE, "lbctl-controller", topology.run_dir / "controller.kubeconfig"
    )
    metrics = f"127.0.0.1:{free_port()}"
    argv = [
        str(BIN / "lbctl-controller"), "--kubeconfig", str(kubeconfig),
        "--config-map", CONFIG_MAP, "--metrics-bind-address", metrics,
    ]  # fmt: skip
    env = {"KUBECACHEDIR": str(topology.run_dir / "kube-cache")}
    proc = topology.spawn(None, argv, role="controller", env=env)
    agent = Agent("controller", proc, topology.run_dir / "logs" / "controller.log", metrics)
    user = f"system:serviceaccount:{NAMESPACE}:lbctl-controller"
    ready = functools.partial(watching_services, control.audit_log, user)
    _wait_ready(agent, ready, "watching Services")
    return agent


def speaker_kubeconfig(topology: Topology, control: ControlPlane, api_url: str) -> Path:
    """One token of ServiceAccount lbctl-system/lbctl-speaker for every node's speaker."""
    path = topology.run_dir / "speaker.kubeconfig"
    if not path.exists():
        control.service_account_kubeconfig(NAMESPACE, "lbctl-speaker", path, server=api_url)
    return path


def start_speaker(
    topology: Topology, control: ControlPlane, node: NodeMember, api_url: str, *, wait: bool = True
) -> Agent:
    """lbctl-speaker inside `node`'s namespace, reaching the API through the node's relay."""
    kubeconfig = speaker_kubeconfig(topology, control, api_url)
    argv = [
        str(BIN / "lbctl-speaker"), "--kubeconfig", str(kubeconfig), "--node-name", node.name,
        "--config-map", CONFIG_MAP,
        "--probe-bind-address", f"{node.host.addr4}:{PROBE_PORT}",
        "--metrics-bind-address", NODE_METRICS,
        "--bgp-dir", str(topology.run_dir / f"bgp-{node.name}"),
    ]  # fmt: skip
    role = f"speaker-{node.name}"
    env = {
        "KUBECACHEDIR": str(topology.run_dir / f"kube-cache-{node.name}"),
        "NODE_NAME": node.name,
    }
    proc = topology.spawn(node.netns, argv, role=role, env=env)
    agent = Agent(role, proc, topology.run_dir / "logs" / f"{role}.log", NODE_METRICS, node.netns)
    if wait:
        _wait_ready(agent, functools.partial(speaker_ready, node.netns), "/readyz")
    return agent


def speaker_ready(netns: str) -> bool:
    """The speaker's /readyz inside its namespace: 200 once it has watched its config."""
    return scrape(netns, NODE_METRICS, "/readyz")[0] == 200


def scrape(netns: str | None, address: str, path: str = "/metrics") -> tuple[int, str]:
    """GET http://ADDRESS/PATH, from inside `netns` when given: (status, body); (0, "") when
    nothing answers."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    return nsutil.run_in_netns(netns, get) if netns else get()
