"""The lab kubelet's runtime reaps every process it started: two starts of one backend at once
exec one process, and close() stops processes that left `backends` without being stopped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from lbctl.lab import nsutil
from lbctl.lab.podrunner import Backend, PodRunner

NETNS = f"lbctl-podrunner-{os.getpid()}"
POD_IP = "192.0.2.61"


@pytest.fixture
def netns() -> Iterator[str]:
    nsutil.ip("netns", "add", NETNS)
    try:
        nsutil.ip("link", "set", "lo", "up", netns=NETNS)
        yield NETNS
    finally:
        for pid in nsutil.netns_pids(NETNS):  # only what this test started lives in it
            os.kill(pid, 9)
        nsutil.ip("netns", "del", NETNS, check=False)


class Pids:
    def __init__(self) -> None:
        self.live: dict[int, str] = {}

    def record(self, pid: int, what: str) -> None:
        self.live[pid] = what

    def forget(self, pid: int) -> None:
        self.live.pop(pid, None)


def runner(tmp_path: Path, pids: Pids) -> PodRunner:
    return PodRunner(
        record_pid=pids.record, forget_pid=pids.forget, log_dir=tmp_path, on_change=lambda: None
    )


def backend(netns: str, name: str) -> Backend:
    return Backend(
        key=("default", name), uid="u1", node="node-1", netns=netns, ip=POD_IP,
        ports=(("http", 8080),),
    )  # fmt: skip


def started_then_closed(
    netns: str, tmp_path: Path, between: Callable[[PodRunner, Backend], Awaitable[None]]
) -> tuple[int, int]:
    """Processes alive after a backend is added and `between` ran, and after close()."""
    pids = Pids()

    async def main() -> tuple[int, int]:
        pods = runner(tmp_path, pids)
        one = backend(netns, "web")
        await pods.add(one)
        await between(pods, one)
        started = len(pids.live)
        await pods.close()
        return started, len(pids.live)

    return asyncio.run(main())


def test_two_starts_at_once_exec_one_process(netns: str, tmp_path: Path) -> None:
    async def restart_twice(pods: PodRunner, one: Backend) -> None:
        await pods.hold(one.key)
        await asyncio.gather(pods.start(one.key), pods.start(one.key))

    assert started_then_closed(netns, tmp_path, restart_twice) == (1, 0)
    assert nsutil.netns_pids(netns) == []


def test_close_reaps_a_process_whose_removal_was_cut_short(netns: str, tmp_path: Path) -> None:
    async def cut_short(pods: PodRunner, one: Backend) -> None:
        del pods.backends[one.key]  # as a remove() cancelled right after it popped the backend

    assert started_then_closed(netns, tmp_path, cut_short) == (1, 0)
    assert nsutil.netns_pids(netns) == []
