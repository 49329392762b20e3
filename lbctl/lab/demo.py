"""`lbctl lab demo`: a Deployment, a LoadBalancer Service, its address and traffic to it, each
step printed as the command a user would type and run with the real kubectl; called by the CLI.

Safe to run twice: what exists already is kept and shown again.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lbctl.lab import nsutil

DEPLOYMENT = "web"
IMAGE = "lbctl/lab-backend"  # the lab kubelet runs lbctl.lab.backend whatever the image says
REPLICAS = 3
CONTAINER_PORT = 8080  # backends listen on each declared containerPort of their pod
SERVICE_PORT = 80
WAIT = "30s"  # each `kubectl wait`
COMMAND_TIMEOUT = 40.0  # above WAIT, so kubectl reports its own timeout first
REQUESTS = 6  # kube-proxy picks a backend at random for each connection
FIRST_ANSWER_TIMEOUT = 10.0  # kube-proxy programs a new ingress IP on its next sync
CONDITION = "lbctl.io/IPAllocated"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where to look."""


class Shell:
    """Prints each command as a user would type it, runs it, prints its output."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubectl = Path(sys.executable).parent / "kubectl"
        if not self.kubectl.exists():
            raise DemoError(f"{self.kubectl} is missing: install the project (./dev) first")
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def run(
        self, argv: Sequence[str], *, show: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        shown = ["kubectl", *argv[1:]] if argv[0] == str(self.kubectl) else list(argv)
        if show:
            print(f"$ {shlex.join(shown)}", flush=True)
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                env=self.env,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DemoError(f"running `{shlex.join(shown)}`: {err}") from err
        if show and (output := (done.stdout + done.stderr).rstrip()):
            print(output, flush=True)
        if check and done.returncode != 0:
            raise DemoError(
                f"`{shlex.join(shown)}` exited {done.returncode}: {done.stderr.strip()}"
            )
        return done

    def k(self, *args: str, show: bool = True, check: bool = True) -> str:
        return self.run([str(self.kubectl), *args], show=show, check=check).stdout

    def exists(self, kind: str, name: str) -> bool:
        return (
            self.run(
                [str(self.kubectl), "get", kind, name, "-o", "name"], show=False, check=False
            ).returncode
            == 0
        )


def step(title: str) -> None:
    print(f"\n## {title}", flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def show_cluster(sh: Shell, info: dict[str, Any]) -> None:
    step(f"The cluster: {len(info['nodes'])} nodes, registered by the lab's kubelet stand-in")
    print(f"$ export KUBECONFIG={info['kubeconfig']}")
    note(f"kubectl here is {sh.kubectl}")
    sh.k("get", "nodes")


def deploy(sh: Shell) -> None:
    step(f"A Deployment of {REPLICAS} backends (each says which node and pod answered)")
    if sh.exists("deployment", DEPLOYMENT):
        note(f"deployment {DEPLOYMENT} exists already (an earlier demo): keeping it")
        replicas = sh.k(
            "get", "deployment", DEPLOYMENT, "-o", "jsonpath={.spec.replicas}", show=False
        )
    else:
        sh.k(
            "create", "deployment", DEPLOYMENT, f"--image={IMAGE}",
            f"--replicas={REPLICAS}", f"--port={CONTAINER_PORT}",
        )  # fmt: skip
        replicas = str(REPLICAS)
    sh.k(
        "wait", f"--for=jsonpath={{.status.readyReplicas}}={replicas}",
        f"deployment/{DEPLOYMENT}", f"--timeout={WAIT}",
    )  # fmt: skip
    sh.k(
        "get", "pods", "-l", f"app={DEPLOYMENT}",
        "-o", "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP",
    )  # fmt: skip


def expose(sh: Shell) -> None:
    step("A LoadBalancer Service in front of them")
    if sh.exists("service", DEPLOYMENT):
        note(f"service {DEPLOYMENT} exists already: keeping it")
        return
    note(f"the backends listen on {CONTAINER_PORT}, so the Service targets that port")
    sh.k(
        "expose", "deployment", DEPLOYMENT, f"--port={SERVICE_PORT}",
        f"--target-port={CONTAINER_PORT}", "--type=LoadBalancer",
    )  # fmt: skip


def show_verdict(sh: Shell) -> None:
    """The condition the controller writes on the Service and the Events it posts."""
    sh.k(
        "get", "service", DEPLOYMENT, "-o",
        'jsonpath={range .status.conditions[*]}{.type}{"  "}{.status}{"  "}{.reason}'
        '{"  "}{.message}{"\\n"}{end}',
    )  # fmt: skip
    sh.k(
        "get", "events",
        f"--field-selector=involvedObject.kind=Service,involvedObject.name={DEPLOYMENT}",
        "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
    )  # fmt: skip


def ingress_ips(sh: Shell) -> list[str]:
    out = sh.k(
        "get", "service", DEPLOYMENT, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}",
        show=False,
    )  # fmt: skip
    return out.split()


def allocate(sh: Shell, info: dict[str, Any]) -> list[str]:
    controller = info["controller"]
    pool = info["pool"]
    if controller["running"]:
        step(f"The lbctl controller gives it an address from pool {pool['name']!r}")
        done = sh.run(
            [str(sh.kubectl), "wait", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}",
             f"service/{DEPLOYMENT}", f"--timeout={WAIT}"],
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            show_verdict(sh)
            raise DemoError(
                f"service {DEPLOYMENT} got no address; see the events above and "
                f"{Path(info['kubeconfig']).parent / 'logs' / 'controller.log'}"
            )
        sh.k("get", "service", DEPLOYMENT)
        show_verdict(sh)
        return ingress_ips(sh)
    raise DemoError(
        f"no controller runs in this lab ({controller['note']}): nothing gives the Service an "
        "address; start the lab without --no-controller"
    )


def ask(sh: Shell, netns: str, vip: str, *, show: bool) -> dict[str, Any] | None:
    """One HTTP request from the client namespace; the backend's JSON answer, or None."""
    host = f"[{vip}]" if ":" in vip else vip
    if shutil.which("curl"):
        argv = ["ip", "netns", "exec", netns, "curl", "-s", "-m", "2", f"http://{host}/"]
        out = sh.run(argv, show=show, check=False).stdout
    else:
        out = raw_request(netns, vip)
    try:
        answer = json.loads(out)
    except json.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def raw_request(netns: str, vip: str) -> str:
    """Without curl: the same GET over a socket opened inside the namespace."""
    try:
        with nsutil.connect_tcp_in_netns(netns, vip, SERVICE_PORT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            data = b"".join(iter(lambda: sock.recv(4096), b""))
    except (OSError, nsutil.NetnsError):
        return ""
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def first_answer(sh: Shell, netns: str, vip: str) -> None:
    deadline = time.monotonic() + FIRST_ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        if ask(sh, netns, vip, show=False) is not None:
            return
        time.sleep(0.2)
    raise DemoError(f"nothing answered on {vip}:{SERVICE_PORT} within {FIRST_ANSWER_TIMEOUT} s")


def traffic(sh: Shell, info: dict[str, Any], ips: list[str]) -> Counter[str]:
    step("Traffic from the client namespace to the Service's address")
    note("the client's kernel resolves the address by ARP; the speaker that owns it answers,")
    note("and kube-proxy on that node sends each connection to a ready backend")
    netns = info["client"]["netns"]
    seen: Counter[str] = Counter()
    for vip in ips:
        first_answer(sh, netns, vip)
        sh.run(["ip", "-n", netns, "neigh", "show", vip])
        for _ in range(REQUESTS if vip == ips[0] else 2):
            answer = ask(sh, netns, vip, show=True)
            if answer is None:
                raise DemoError(f"a request to {vip} got no answer")
            seen[f"{answer['node']}/{answer['pod']}"] += 1
    sh.k(
        "get", "service", DEPLOYMENT, "-o",
        'jsonpath={range .status.conditions[?(@.type=="lbctl.io/AnnouncedL2")]}{.type}{"  "}'
        '{.status}{"  "}{.message}{"\\n"}{end}',
    )  # fmt: skip
    return seen


def run(info: dict[str, Any]) -> int:
    """The whole demo against a running lab (`info` is its ready.json); 0 on success."""
    sh = Shell(info["kubeconfig"])
    show_cluster(sh, info)
    deploy(sh)
    expose(sh)
    ips = allocate(sh, info)
    if not ips:
        raise DemoError(f"service {DEPLOYMENT} has no address")
    seen = traffic(sh, info, ips)
    step("Done")
    print("reached: " + ", ".join(f"{who} x{n}" for who, n in sorted(seen.items())))
    note("try: kubectl scale deployment web --replicas=5; kubectl delete service web")
    note("stop the lab with: lbctl lab down")
    return 0
