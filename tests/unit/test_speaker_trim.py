"""The speaker gives freed heap back after a large burst of watch events, once the burst is
over, and never in steady state (speaker.memory)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from speaker.memory import QUIET, TRIM_AFTER, Trimmer, libc_trim, rss_mib


def test_a_large_burst_is_trimmed_once_the_watch_is_quiet() -> None:
    calls: list[int] = []
    trimmer = Trimmer(lambda: calls.append(1))
    for _ in range(TRIM_AFTER):
        trimmer.note()
    assert not trimmer.due(), "the period that saw the burst is not quiet"
    for _ in range(QUIET - 1):
        trimmer.note()
    assert trimmer.due(), "a period with fewer than QUIET events after the burst"


@pytest.mark.parametrize("events", [0, TRIM_AFTER - 1], ids=["steady-state", "small-burst"])
def test_no_trim_without_a_large_burst(events: int) -> None:
    trimmer = Trimmer(lambda: None)
    for _ in range(events):
        trimmer.note()
    trimmer.due()
    assert not trimmer.due()


@pytest.mark.asyncio
async def test_run_trims_once_per_burst_and_logs_what_it_gave_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    trimmer = Trimmer(lambda: calls.append(1))
    for _ in range(TRIM_AFTER):
        trimmer.note()
    caplog.set_level(logging.INFO, "lbctl.speaker")
    task = asyncio.create_task(trimmer.run(every=0.01))
    try:
        async with asyncio.timeout(5.0):
            while not calls:
                await asyncio.sleep(0.01)
        for _ in range(20):  # more periods, no new event: no second trim
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert calls == [1]
    assert trimmer.events == 0
    assert any("memory_trimmed events=1000 rss_before_mib=" in r.message for r in caplog.records)


def test_glibc_trim_runs_here() -> None:
    trim = libc_trim()
    assert trim is not None, "this machine's Python runs on glibc"
    trim()
    assert rss_mib() > 1.0
