"""A bed run's state file (namespaces, started PIDs) and the cleanup that reads it; used by the
topology, the kubelet and `lbctl lab down`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lbctl.lab import nsutil
from lbctl.lab.plan import runid_of

STATE_FILE = "state.json"
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class ProcRecord:
    """A process the bed started. start_time (clock ticks since boot, /proc/PID/stat field 22)
    tells it apart from a later process that reused the PID."""

    pid: int
    start_time: int
    role: str


@dataclass
class RunState:
    runid: str
    namespaces: list[str] = field(default_factory=list)
    procs: list[ProcRecord] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunState:
        raw = json.loads(text)
        return cls(
            runid=str(raw["runid"]),
            namespaces=[str(n) for n in raw.get("namespaces", [])],
            procs=[ProcRecord(**p) for p in raw.get("procs", [])],
        )


class StateFile:
    """RunState kept on disk after every change (atomic rename), so a crash leaves a usable file."""

    def __init__(self, run_dir: Path, runid: str) -> None:
        self.path = run_dir / STATE_FILE
        self.state = RunState(runid=runid)
        # The kubelet thread records backends while the test thread records daemons.
        self._lock = threading.RLock()

    def save(self) -> None:
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(self.state.to_json())
            tmp.replace(self.path)

    def add_namespace(self, netns: str) -> None:
        with self._lock:
            if netns not in self.state.namespaces:
                self.state.namespaces.append(netns)
                self.save()

    def remove_namespace(self, netns: str) -> None:
        with self._lock:
            if netns in self.state.namespaces:
                self.state.namespaces.remove(netns)
                self.save()

    def add_proc(self, pid: int, role: str) -> ProcRecord:
        record = ProcRecord(pid=pid, start_time=proc_start_time(pid) or 0, role=role)
        with self._lock:
            self.state.procs.append(record)
            self.save()
        return record

    def remove_proc(self, pid: int) -> None:
        with self._lock:
            before = len(self.state.procs)
            self.state.procs = [p for p in self.state.procs if p.pid != pid]
            if len(self.state.procs) != before:
                self.save()

    def procs(self) -> list[ProcRecord]:
        with self._lock:
            return list(self.state.procs)


def proc_start_time(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None  # a zombie is already dead; its parent reaps it
    return int(fields[19])


def still_ours(
    records: Iterable[ProcRecord], start_time_of: Callable[[int], int | None]
) -> list[ProcRecord]:
    """Records whose PID still runs the process the bed started (same start time)."""
    return [r for r in records if (t := start_time_of(r.pid)) is not None and t == r.start_time]


def owned_namespaces(state: RunState) -> list[str]:
    """The namespaces in the state that carry this run's id: cleanup never deletes others."""
    return [ns for ns in state.namespaces if runid_of(ns) == state.runid]


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop_pids(records: Iterable[ProcRecord], grace: float = TERM_GRACE) -> list[int]:
    """SIGTERM each process still ours, SIGKILL what is left after `grace`; return PIDs killed."""
    live = still_ours(records, proc_start_time)
    for record in live:
        _signal(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = live
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = still_ours(pending, proc_start_time)
    for record in pending:
        _signal(record.pid, signal.SIGKILL)
    return [r.pid for r in live]


def kill_namespace_procs(netns: str) -> list[int]:
    """SIGKILL whatever still lives in a bed namespace (daemons that forked, say)."""
    pids = nsutil.netns_pids(netns)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return pids


def delete_namespace(netns: str) -> None:
    if nsutil.netns_exists(netns):
        nsutil.ip("netns", "del", netns, check=False)


def list_runs(root: Path) -> list[Path]:
    """Run directories under `root` that hold a state file (for `lbctl lab down --all`)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / STATE_FILE).is_file())


def cleanup_run(run_dir: Path, *, remove_dir: bool = True) -> RunState | None:
    """Finish a run from its state file: stop its PIDs, delete its namespaces, drop the dir.

    Safe to call twice and after a crash; returns the state that was found (None if no file).
    """
    path = run_dir / STATE_FILE
    try:
        state = RunState.from_json(path.read_text())
    except FileNotFoundError:
        state = None
    if state is not None:
        stop_pids(state.procs)
        for netns in owned_namespaces(state):
            if nsutil.netns_exists(netns):
                kill_namespace_procs(netns)
                delete_namespace(netns)
    if remove_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return state
