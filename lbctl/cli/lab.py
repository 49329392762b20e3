"""`lbctl lab up|demo|status|down`: run the lab in the background and show it; called by main.

`up` starts `python -m lbctl.lab.daemon` detached and waits for its ready file; `down` stops it
by PID and finishes whatever it left (runstate.cleanup_run); the `current` file under the root
names the run the other commands act on by default.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lbctl.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from lbctl.cli.lab_show import print_usage
from lbctl.lab import demo, kubebin, nsutil, plan, procs
from lbctl.lab.daemon import ROLE, read_ready, read_state
from lbctl.lab.procs import log_tail
from lbctl.lab.runstate import (
    ProcRecord,
    cleanup_run,
    delete_namespace,
    kill_namespace_procs,
    list_runs,
    proc_start_time,
    still_ours,
)

HELP = "run a 3-node Kubernetes lab on this machine (namespaces, control plane, controller)"
DESCRIPTION = """\
The lab is a small Kubernetes cluster built on this machine: the real kube-apiserver, etcd,
kube-controller-manager, kube-scheduler and a kube-proxy per node (built once from Kubernetes'
Go modules by tools/kube, which needs Go >= 1.26 the first time), network namespaces for the
nodes, a client and a router on a LAN bridge, a kubelet stand-in that runs Pods as real
processes, the pool ConfigMap lbctl-system/lbctl-config, the lbctl controller and an
lbctl-speaker per node under their ServiceAccounts. It needs root. See docs/lab.md."""
EPILOG = """\
examples:
  sudo lbctl lab up             # start it; prints the kubeconfig to use
  sudo lbctl lab demo           # a Deployment, a LoadBalancer Service, traffic to its IP
  sudo lbctl lab status
  sudo lbctl lab down           # stop it and remove every namespace"""

CURRENT = "current"  # file under the root holding the run id of the lab commands default to
# namespaces ~0.5 s, control plane ~6 s, nodes ~2 s, kopf 2-5 s; generous for a loaded machine.
# A first run also builds the control plane (minutes): `./dev` does that before `lab up`.
UP_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0  # the daemon's own teardown: SIGTERM grace 2 s per step, netns removal


class LabCommandError(RuntimeError):
    """A lab command cannot proceed; the message says why and what to do."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "lab",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        type=Path,
        default=plan.RUN_ROOT,
        help=f"where runs keep their state (default {plan.RUN_ROOT})",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    up = actions.add_parser("up", parents=[common], help="start the lab in the background")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--runid", help="4-12 hex digits naming the run (default: random)")
    up.add_argument("--no-controller", action="store_true", help="do not start lbctl-controller")
    up.add_argument(
        "--parallel",
        action="store_true",
        help="start even if another lab runs (this run does not become the current one)",
    )
    up.add_argument("--timeout", type=float, default=UP_TIMEOUT, help="seconds to wait for it")
    up.set_defaults(handler=run_up)
    show = actions.add_parser("demo", parents=[common], help="show a LoadBalancer Service working")
    show.add_argument("--runid", help="the run to use (default: the current lab)")
    show.set_defaults(handler=run_demo)
    status = actions.add_parser("status", parents=[common], help="what runs")
    status.set_defaults(handler=run_status)
    down = actions.add_parser("down", parents=[common], help="stop the lab, remove everything")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--runid", help="the run to stop (default: the current lab)")
    which.add_argument("--all", action="store_true", help="every run under the root")
    down.set_defaults(handler=run_down)


def fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"lbctl lab: {message}", file=sys.stderr)
    return code


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabCommandError(
            "the lab needs root: it creates network namespaces, veth links and a bridge. "
            "Run it as root, e.g. `sudo .venv/bin/lbctl lab up`."
        )


# -- runs ------------------------------------------------------------------------------------


def read_current(root: Path) -> str | None:
    try:
        return (root / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def clear_current(root: Path, runid: str) -> None:
    if read_current(root) == runid:
        (root / CURRENT).unlink(missing_ok=True)


def daemon_record(run_dir: Path) -> ProcRecord | None:
    state = read_state(run_dir)
    if state is None:
        return None
    return next((p for p in state.procs if p.role == ROLE), None)


def daemon_alive(run_dir: Path) -> bool:
    record = daemon_record(run_dir)
    return record is not None and bool(still_ours([record], proc_start_time))


def resolve_runid(root: Path, runid: str | None) -> str:
    """The run a command acts on: --runid, else the current lab."""
    if runid:
        return plan.check_runid(runid)
    current = read_current(root)
    if current is None:
        raise LabCommandError("no lab is running: start one with `lbctl lab up`")
    return current


@contextlib.contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Two `up`s at once must not both see "no lab" and both start one."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise LabCommandError("another `lbctl lab up` is starting a lab right now") from err
        yield


# -- up ----------------------------------------------------------------------------------------


def check_no_lab(root: Path) -> None:
    current = read_current(root)
    if current is None:
        return
    run_dir = plan.run_dir(plan.check_runid(current), root)
    if daemon_alive(run_dir):
        raise LabCommandError(
            f"a lab is already running (run {current}); see `lbctl lab status`, stop it with "
            "`lbctl lab down`, or start another one with `lbctl lab up --parallel`"
        )
    if run_dir.exists():
        raise LabCommandError(
            f"lab {current} stopped without cleaning up; remove what it left with "
            "`lbctl lab down` and start again"
        )
    (root / CURRENT).unlink(missing_ok=True)  # a pointer to nothing: forget it


def spawn_daemon(args: argparse.Namespace, runid: str, early_log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "lbctl.lab.daemon", "--runid", runid]
    argv += ["--nodes", str(args.nodes), "--root", str(args.root)]
    if args.no_controller:
        argv.append("--no-controller")
    with early_log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal's ^C
            cwd="/",
        )


def wait_ready(proc: subprocess.Popen[bytes], run_dir: Path, timeout: float) -> dict[str, Any]:
    """The daemon's ready.json; LabCommandError if it exits or the deadline passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_ready(run_dir)
        if info is not None:
            return info
        if proc.poll() is not None:
            raise LabCommandError(f"the lab did not come up (exit code {proc.returncode})")
        time.sleep(0.1)
    raise LabCommandError(f"the lab was not ready within {timeout:g} s")


def abandon(proc: subprocess.Popen[bytes], run_dir: Path) -> None:
    """Stop a daemon that failed to come up, then finish whatever it left."""
    procs.stop(proc, STOP_TIMEOUT)
    cleanup_run(run_dir)
    remove_stray_namespaces(run_dir.name)


def run_up(args: argparse.Namespace) -> int:
    try:
        require_root()
        if not 1 <= args.nodes <= plan.MAX_POD_NODES:
            return fail(f"--nodes {args.nodes}: want 1..{plan.MAX_POD_NODES}", EXIT_USAGE)
        runid = plan.check_runid(args.runid) if args.runid else plan.new_runid()
        kubebin.ensure()  # before the start-up clock: a first build takes minutes
        with root_lock(args.root):
            if not args.parallel:
                check_no_lab(args.root)
            run_dir = plan.run_dir(runid, args.root)
            if run_dir.exists():
                raise LabCommandError(f"run {runid} already exists under {args.root}")
            if any(plan.runid_of(ns) == runid for ns in nsutil.list_netns()):
                raise LabCommandError(f"namespaces of run {runid} exist; `lbctl lab down` first")
            early_log = args.root / f".{runid}.up.log"
            parts = "control plane, kubelet, kube-proxy"
            parts += "" if args.no_controller else ", controller"
            nodes = f"{args.nodes} node" + "s" * (args.nodes != 1)
            print(f"starting lab {runid}: {nodes}, {parts}", flush=True)
            proc = spawn_daemon(args, runid, early_log)
            if not args.parallel:
                (args.root / CURRENT).write_text(runid + "\n")
            return finish_up(args, proc, run_dir, early_log)
    except (LabCommandError, plan.PlanError, kubebin.KubeBinError) as err:
        return fail(str(err))


def finish_up(
    args: argparse.Namespace, proc: subprocess.Popen[bytes], run_dir: Path, early_log: Path
) -> int:
    try:
        info = wait_ready(proc, run_dir, args.timeout)
    except (LabCommandError, KeyboardInterrupt) as err:
        print(f"lbctl lab: {err or 'interrupted'}; start-up log:", file=sys.stderr)
        print(log_tail(early_log, 25), file=sys.stderr)
        abandon(proc, run_dir)
        clear_current(args.root, run_dir.name)
        early_log.unlink(missing_ok=True)
        print("lbctl lab: stopped and removed what it had started", file=sys.stderr)
        return EXIT_INVALID
    early_log.unlink(missing_ok=True)
    proc.returncode = 0  # detached on purpose: no "still running" warning when we exit
    print_usage(info, run_dir, current=not args.parallel)
    return EXIT_OK


# -- down --------------------------------------------------------------------------------------


def remove_stray_namespaces(runid: str) -> list[str]:
    """Namespaces of this run that no state file lists (a crash between create and save)."""
    stray = [ns for ns in nsutil.list_netns() if plan.runid_of(ns) == runid]
    for netns in stray:
        kill_namespace_procs(netns)
        delete_namespace(netns)
    return stray


def stop_run(run_dir: Path) -> str:
    """Stop a run's daemon (it cleans up after itself), then finish what is left; a summary."""
    if not run_dir.exists() and not any(
        plan.runid_of(ns) == run_dir.name for ns in nsutil.list_netns()
    ):
        return f"no lab {run_dir.name} (nothing to clean up)"
    record = daemon_record(run_dir)
    alive = record is not None and bool(still_ours([record], proc_start_time))
    if record is not None and alive:
        os.kill(record.pid, 15)  # SIGTERM: the daemon tears the lab down in order
        deadline = time.monotonic() + STOP_TIMEOUT
        while still_ours([record], proc_start_time) and time.monotonic() < deadline:
            time.sleep(0.1)
    state = cleanup_run(run_dir)  # whatever the daemon could not finish, or a crashed run
    stray = remove_stray_namespaces(run_dir.name)
    (run_dir.parent / f".{run_dir.name}.up.log").unlink(missing_ok=True)
    leftovers = (len(state.namespaces) if state else 0) + len(stray)
    how = "stopped" if alive else "cleaned up (its daemon was not running)"
    return f"lab {run_dir.name} {how}" + (
        f" ({leftovers} leftover namespaces removed)" * bool(leftovers)
    )


def runs_to_stop(args: argparse.Namespace) -> list[str]:
    if args.all:
        runs = {p.name for p in list_runs(args.root)}
        if current := read_current(args.root):
            runs.add(current)
        return sorted(runs)
    return [resolve_runid(args.root, args.runid)]


def run_down(args: argparse.Namespace) -> int:
    try:
        require_root()
    except LabCommandError as err:
        return fail(str(err))
    try:
        runids = runs_to_stop(args)
    except (LabCommandError, plan.PlanError) as err:
        if args.runid is None and not args.all:
            print("no lab is running (nothing to stop)")
            return EXIT_OK
        return fail(str(err))
    if not runids:
        print(f"no lab runs under {args.root}")
    for runid in runids:
        print(stop_run(plan.run_dir(plan.RunId(runid), args.root)))
        clear_current(args.root, runid)
    return EXIT_OK


# -- status and demo ---------------------------------------------------------------------------


def describe_run(root: Path, runid: str, current: str | None) -> list[str]:
    run_dir = plan.run_dir(plan.RunId(runid), root)
    info, state = read_ready(run_dir), read_state(run_dir)
    mark = " (current)" if runid == current else ""
    if state is None:
        return [f"lab {runid}{mark}: no state under {run_dir} (stale pointer)"]
    alive = daemon_alive(run_dir)
    what = "running" if alive and info else ("starting" if alive else "NOT RUNNING (crashed?)")
    lines = [f"lab {runid}{mark}: {what}"]
    if info:
        lines.append(f"  api: {info['api']}  kubeconfig: {info['kubeconfig']}")
        controller = info["controller"]
        metrics = f"  metrics: {controller['metrics']}" if controller.get("metrics") else ""
        lines.append(f"  controller: {controller['note']}{metrics}")
    for proc in state.procs:
        live = "alive" if still_ours([proc], proc_start_time) else "gone"
        lines.append(f"  pid {proc.pid:<7} {proc.role:<24} {live}")
    present = [ns for ns in state.namespaces if nsutil.netns_exists(ns)]
    lines.append(f"  namespaces: {len(present)} ({', '.join(present)})")
    if not alive:
        lines.append(f"  clean up with: lbctl lab down --runid {runid}")
    return lines


def run_status(args: argparse.Namespace) -> int:
    current = read_current(args.root)
    runids = sorted({p.name for p in list_runs(args.root)} | ({current} if current else set()))
    if not runids:
        print(f"no lab runs under {args.root}; start one with `lbctl lab up`")
        return EXIT_OK
    for runid in runids:
        print("\n".join(describe_run(args.root, runid, current)))
    return EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    try:
        require_root()
        runid = resolve_runid(args.root, args.runid)
        run_dir = plan.run_dir(plan.RunId(runid), args.root)
        info = read_ready(run_dir)
        if info is None or not daemon_alive(run_dir):
            raise LabCommandError(f"lab {runid} is not running; see `lbctl lab status`")
        return demo.run(info)
    except (LabCommandError, plan.PlanError, demo.DemoError) as err:
        return fail(str(err))
