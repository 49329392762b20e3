"""The run state file and the cleanup decisions drawn from it."""

from __future__ import annotations

import os
from pathlib import Path

from lbctl.lab.runstate import (
    ProcRecord,
    RunState,
    StateFile,
    cleanup_run,
    list_runs,
    owned_namespaces,
    proc_start_time,
    still_ours,
)


def test_state_survives_a_round_trip_through_json() -> None:
    state = RunState("abc123", ["lbctl-abc123-lan"], [ProcRecord(10, 555, "bird")])
    assert RunState.from_json(state.to_json()) == state


def test_state_file_is_rewritten_on_every_change(tmp_path: Path) -> None:
    sf = StateFile(tmp_path, "abc123")
    sf.add_namespace("lbctl-abc123-lan")
    sf.add_proc(os.getpid(), "self")
    on_disk = RunState.from_json(sf.path.read_text())
    assert on_disk.namespaces == ["lbctl-abc123-lan"]
    assert [(p.pid, p.role) for p in on_disk.procs] == [(os.getpid(), "self")]
    sf.remove_proc(os.getpid())
    sf.remove_namespace("lbctl-abc123-lan")
    assert RunState.from_json(sf.path.read_text()) == RunState("abc123")


def test_a_reused_pid_is_not_ours() -> None:
    records = [ProcRecord(1, 100, "a"), ProcRecord(2, 200, "b"), ProcRecord(3, 300, "c")]
    live = {1: 100, 2: 999}  # 2 was reused by a later process, 3 is gone
    assert still_ours(records, live.get) == [records[0]]


def test_cleanup_only_touches_namespaces_of_its_own_run() -> None:
    state = RunState("abc123", ["lbctl-abc123-lan", "lbctl-ffffff-lan", "eth-lab", "lbctl-abc123"])
    assert owned_namespaces(state) == ["lbctl-abc123-lan"]


def test_own_process_start_time_is_readable() -> None:
    assert isinstance(proc_start_time(os.getpid()), int)
    assert proc_start_time(2**22 + 12345) is None


def test_cleanup_without_a_state_file_just_removes_the_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "abc123"
    run_dir.mkdir()
    assert cleanup_run(run_dir) is None
    assert not run_dir.exists()


def test_list_runs_finds_directories_with_a_state_file(tmp_path: Path) -> None:
    (tmp_path / "abc123").mkdir()
    StateFile(tmp_path / "abc123", "abc123").save()
    (tmp_path / "empty").mkdir()
    assert list_runs(tmp_path) == [tmp_path / "abc123"]
    assert list_runs(tmp_path / "missing") == []
