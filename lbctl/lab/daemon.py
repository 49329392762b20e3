"""The lab's long-lived process: the bed (namespaces, the real control plane, kubelet stand-in,
kube-proxy), lbctl's RBAC, the pool ConfigMap and the controller under its ServiceAccount,
held until SIGTERM; started by `lbctl lab up` (`python -m lbctl.lab.daemon`), stopped by `down`.

The daemon writes `ready.json` in the run directory once everything answers; `lbctl lab up`
waits for that file (or for the daemon to exit, which means it failed and cleaned up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import yaml

from lbctl.configmap import LBCTL_KEY, load_text
from lbctl.lab import plan
from lbctl.lab.runstate import STATE_FILE, RunState

if TYPE_CHECKING:
    from lbctl.lab.kubeapi import KubeApi

# The bed's modules (aiohttp, scapy) are imported where the lab starts, not here: `lbctl`
# imports this module for LabFiles and read_ready, and must start fast and without the lab extra.

log = logging.getLogger("lbctl.lab")

ROLE = "lab-daemon"  # the daemon's own record in state.json, so `down` finds it
CONFIG_NAMESPACE = "lbctl-system"
CONFIG_NAME = "lbctl-config"
POOL = "lab"


class LabError(RuntimeError):
    """The lab could not come up; the message says which step failed."""


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived before the lab was up: abandon start-up and clean up."""


@dataclass(frozen=True)
class LabFiles:
    """Where a run keeps its files; shared by the daemon and `lbctl lab`."""

    run_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def ready(self) -> Path:
        return self.run_dir / "ready.json"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    def node_kubeconfig(self, node: str) -> Path:
        return self.run_dir / f"speaker-{node}.kubeconfig"


def read_ready(run_dir: Path) -> dict[str, Any] | None:
    """What the daemon wrote once up, or None (not up yet, or gone)."""
    try:
        info = json.loads(LabFiles(run_dir).ready.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def read_state(run_dir: Path) -> RunState | None:
    try:
        return RunState.from_json((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


# -- the pool ConfigMap ----------------------------------------------------------------------


def lab_config_text() -> str:
    """lbctl's format (docs/configuration.md): the lab's suggested L2 ranges, announced on L2."""
    (lo4, hi4), (lo6, hi6) = plan.L2_VIPS4, plan.L2_VIPS6
    config = {
        "apiVersion": "lbctl.io/v1alpha1",
        "kind": "Config",
        "pools": [{"name": POOL, "addresses": [f"{lo4}-{hi4}", f"{lo6}-{hi6}"]}],
        "l2Advertisements": [{"name": POOL, "pools": [POOL]}],
    }
    return yaml.safe_dump(config, sort_keys=False)


def configmap_body() -> dict[str, Any]:
    text = lab_config_text()
    load_text(text, where="lab config")  # raises ConfigError: a bug here, not a user's mistake
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_NAME, "namespace": CONFIG_NAMESPACE},
        "data": {LBCTL_KEY: text},
    }


async def _create_or_patch(api: KubeApi, path: str, body: dict[str, Any]) -> None:
    from lbctl.lab.kubeapi import KubeApiError

    try:
        await api.create(path, body)
    except KubeApiError as err:
        if err.status != 409:
            raise
        if "data" in body:  # an existing ConfigMap gets the lab's data again
            await api.patch(f"{path}/{body['metadata']['name']}", {"data": body["data"]})


async def bootstrap(kubeconfig: Path) -> None:
    """Namespaces default and lbctl-system, and the pool ConfigMap (idempotent)."""
    from lbctl.lab.kubeapi import KubeApi, collection

    async with KubeApi.from_kubeconfig(kubeconfig) as api:
        for ns in ("default", CONFIG_NAMESPACE):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            await _create_or_patch(api, collection("v1", "namespaces"), body)
        path = collection("v1", "configmaps", CONFIG_NAMESPACE)
        await _create_or_patch(api, path, configmap_body())


# -- the lab -----------------------------------------------------------------------------------


class Lab:
    """Everything one run holds; up() raises LabError or Stopped, down() is safe to call twice."""

    def __init__(
        self, nodes: int, runid: str, root: Path, *, api_port: int, controller: bool
    ) -> None:
        from lbctl.lab.bed import Bed

        self.bed = Bed(nodes, runid=runid, root=root, api_port=api_port)
        self.topology = self.bed.topology
        self.files = LabFiles(self.topology.run_dir)
        self.want_controller = controller
        self.controller: subprocess.Popen[bytes] | None = None
        self.speakers: dict[str, subprocess.Popen[bytes]] = {}
        self.controller_note = "disabled (--no-controller)"
        self.metrics: str | None = None
        self.started = time.time()
        self._recorded_self = False

    def up(self) -> dict[str, Any]:
        """Bring everything up in order; returns what ready.json says."""
        self.topology.up()
        self.topology.record_pid(os.getpid(), ROLE)
        self._recorded_self = True
        self.bed.populate()
        control = self.bed.control
        shutil.copyfile(control.admin_kubeconfig, self.files.kubeconfig)
        self.files.kubeconfig.chmod(0o600)
        for node in self.topology.nodes:
            shutil.copyfile(
                self.bed.node_kubeconfig(node.name), self.files.node_kubeconfig(node.name)
            )
        from lbctl.lab import agents

        agents.apply_rbac(control)
        asyncio.run(bootstrap(self.files.kubeconfig))
        log.info("lab_api_ready url=%s", control.url)
        if self.want_controller:
            try:
                agent = agents.start_controller(self.topology, control)
            except agents.AgentError as err:
                raise LabError(str(err)) from err
            self.controller, self.metrics = agent.proc, agent.metrics
            self.controller_note = "running"
            log.info("lab_controller_ready pid=%d", agent.proc.pid)
            for node in self.topology.nodes:
                try:
                    speaker = agents.start_speaker(
                        self.topology, control, node, self.bed.node_api_url
                    )
                except agents.AgentError as err:
                    raise LabError(str(err)) from err
                self.speakers[node.name] = speaker.proc
            log.info("lab_speakers_ready nodes=%d", len(self.speakers))
        return self.describe()

    def describe(self) -> dict[str, Any]:
        topo = self.topology
        control = self.bed.control
        return {
            "runid": topo.runid,
            "pid": os.getpid(),
            "started": self.started,
            "api": control.url,
            "kubeconfig": str(self.files.kubeconfig),
            "node_api": self.bed.node_api_url,
            "versions": control.versions(),
            "logs": str(self.files.logs),
            "nodes": {
                n.name: {"netns": n.netns, "ip4": str(n.host.addr4), "mac": n.host.mac}
                for n in topo.nodes
            },
            "client": {"netns": topo.client.netns, "ip4": str(topo.client.host.addr4)},
            "pool": {"name": POOL, "v4": [str(a) for a in plan.L2_VIPS4]},
            "controller": {
                "running": self.controller is not None,
                "pid": self.controller.pid if self.controller else None,
                "note": self.controller_note,
                "metrics": f"http://{self.metrics}/metrics" if self.metrics else None,
            },
            "speakers": {
                name: {"pid": proc.pid, "running": proc.poll() is None}
                for name, proc in self.speakers.items()
            },
        }

    def check(self) -> None:
        """Log once if the controller or a speaker died (the lab keeps running: `status` shows
        it)."""
        for name, proc in list(self.speakers.items()):
            if proc.poll() is not None:
                log.error("lab_speaker_exited node=%s code=%s", name, proc.returncode)
                self.topology.forget_pid(proc.pid)
                del self.speakers[name]
                write_ready(self.files.ready, self.describe())
        if self.controller is not None and self.controller.poll() is not None:
            log.error("lab_controller_exited code=%s", self.controller.returncode)
            self.topology.forget_pid(self.controller.pid)
            self.controller = None
            self.controller_note = "exited (see logs/controller.log)"
            write_ready(self.files.ready, self.describe())

    def down(self) -> None:
        """Controller, then the bed (kubelet and its backends, kube-proxy, the control plane,
        namespaces and run dir)."""
        try:
            if self.controller is not None:
                self.topology.stop_pid(self.controller.pid)
                self.controller = None
        finally:
            if self._recorded_self:
                self.topology.forget_pid(os.getpid())  # else down() would SIGTERM us
                self._recorded_self = False
            self.bed.close()


# -- the process -------------------------------------------------------------------------------


def write_ready(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    tmp.replace(path)


def redirect_output(logfile: Path) -> None:
    """From now on stdout/stderr go to the run's log (the start-up log belongs to `up`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Hold one lab run until SIGTERM.")
    parser.add_argument("--runid", required=True)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--root", type=Path, default=plan.RUN_ROOT)
    parser.add_argument("--api-port", type=int, default=0, help="host API port (0: any free)")
    parser.add_argument("--no-controller", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    up = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if not up:
            raise Stopped(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    lab = Lab(
        args.nodes, args.runid, args.root, api_port=args.api_port, controller=not args.no_controller
    )
    try:
        try:
            info = lab.up()
        except Exception as err:
            print(f"lab up failed: {err}", file=sys.stderr, flush=True)
            return 1
        up = True
        redirect_output(lab.files.logs / "daemon.log")
        write_ready(lab.files.ready, info)
        log.info("lab_ready runid=%s api=%s", args.runid, info["api"])
        while not stop.wait(1.0):
            lab.check()
        log.info("lab_stopping runid=%s", args.runid)
        return 0
    except Stopped as stopped:
        log.info("lab_start_abandoned signal=%s", stopped)
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # cleanup runs to the end; `down` escalates
        lab.down()


if __name__ == "__main__":
    raise SystemExit(main())
