"""Freed heap given back to the system after a burst of watch events.

glibc returns a heap's free memory to the system only from the top of each heap; what is freed
between live allocations stays in the process's RSS. The speaker's threads (kopf's loop, the
data plane, the condition writers) each allocate from their own heap while thousands of
Services arrive, and most of it is garbage once the burst is parsed. After a large burst, once
the watch has been quiet for a check period, the speaker calls glibc's `malloc_trim(0)`, which
gives back every free page of every heap (madvise), and logs what it gave back
(docs/performance.md, "Speaker RSS"). Where there is no glibc (musl), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("lbctl.speaker")
TRIM_AFTER = 1000  # watch events since the last trim that make a burst worth trimming after
QUIET = 100  # fewer events than this in a check period: the burst is over
TRIM_EVERY = 10.0  # s between checks (a counter comparison; nothing else in steady state)


def libc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


def rss_mib() -> float:
    """This process's resident set, MiB (/proc/self/statm)."""
    resident = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    return resident * 4096 / 2**20


class Trimmer:
    """Counts watch events (`note`) and trims once a large burst is over (`run`)."""

    def __init__(self, trim: Callable[[], object] | None = None) -> None:
        self._trim = trim if trim is not None else libc_trim()
        self.events = 0  # since the last trim
        self._checked = 0  # `events` at the last check

    def note(self) -> None:
        self.events += 1

    def due(self) -> bool:
        """Called once per check period: a burst of TRIM_AFTER events or more since the last
        trim, and fewer than QUIET in the period just ended."""
        recent, self._checked = self.events - self._checked, self.events
        return self.events >= TRIM_AFTER and recent < QUIET

    async def run(self, every: float = TRIM_EVERY) -> None:
        """Until cancelled."""
        if self._trim is None:
            return
        while True:
            await asyncio.sleep(every)
            if self.due():
                await self.trim()

    async def trim(self) -> None:
        assert self._trim is not None
        before, start = rss_mib(), time.monotonic()
        await asyncio.to_thread(self._trim)  # off the loop: it walks every heap
        log.info(
            "memory_trimmed events=%d rss_before_mib=%.1f rss_after_mib=%.1f ms=%.1f",
            self.events,
            before,
            rss_mib(),
            (time.monotonic() - start) * 1000,
        )
        self.events = self._checked = 0
