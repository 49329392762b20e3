"""When to decide again: Services whose write failed (capped backoff) and the sweep for Services
deleted while a watch was down. Owned by controller.operator; its loop sleeps until the next one
is due (or until something earlier is scheduled), never on a fixed tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

from controller.kube import KubeError
from lbctl.core.model import ServiceKey

log = logging.getLogger("lbctl.controller")

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds; the last repeats
# kopf re-lists after a 410 (or its first listing) with event type None and never sends the
# DELETED events the watch gap hid: once a listing has been quiet this long, sweep for them.
RELIST_SETTLE = 1.0
BATCH = 100  # Services re-decided per wake-up, so one wake never holds the loop for long


def delay(attempt: int) -> float:
    """Backoff before attempt `attempt + 1` (0-based attempts already failed)."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


class Retries:
    """Due times per Service, and for the sweep; run() calls `redecide` and `sweep` when due."""

    def __init__(
        self,
        redecide: Callable[[ServiceKey], Awaitable[None]],
        sweep: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redecide, self._sweep, self._clock = redecide, sweep, clock
        self._due: dict[ServiceKey, float] = {}  # the truth; _heap may hold stale entries
        self._heap: list[tuple[float, ServiceKey]] = []
        self._attempts: dict[ServiceKey, int] = {}  # failed attempts in a row
        self._sweep_at: float | None = None
        self._wake = asyncio.Event()

    def schedule(self, key: ServiceKey) -> None:
        """`key`'s write failed: decide on it again after its backoff."""
        attempts = self._attempts.get(key, 0)
        self._attempts[key] = attempts + 1
        when = self._clock() + delay(attempts)
        self._due[key] = when
        heapq.heappush(self._heap, (when, key))
        self._wake.set()

    def forget(self, key: ServiceKey) -> None:
        """`key` was written (or is gone): no retry, and its backoff starts over."""
        self._due.pop(key, None)
        self._attempts.pop(key, None)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()
        self._attempts.clear()
        self._sweep_at = None

    def sweep_after(self, seconds: float = RELIST_SETTLE) -> None:
        """Sweep once nothing has called this for `seconds` (a listing has gone quiet)."""
        first = self._sweep_at is None
        self._sweep_at = self._clock() + seconds
        if first:  # a later time needs no wake-up: the loop re-reads it when it wakes
            self._wake.set()

    def pending(self) -> int:
        return len(self._due)

    def _next(self) -> float | None:
        """When something is due next (None: nothing at all)."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale: forgotten or rescheduled since
        times = [t for t in (self._heap[0][0] if self._heap else None, self._sweep_at) if t]
        return min(times) if times else None

    async def run(self) -> None:
        """Until cancelled: sleep until the next due time, then act on what is due."""
        while True:
            when = self._next()
            timeout = None if when is None else max(0.0, when - self._clock())
            if timeout is None or timeout > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            await self._due_now()

    async def _due_now(self) -> None:
        now = self._clock()
        if self._sweep_at is not None and self._sweep_at <= now:
            self._sweep_at = None
            try:
                await self._sweep()
            except KubeError as err:
                log.warning("sweep_failed error=%s", err)
                self._sweep_at = self._clock() + RETRY_DELAYS[-1]
        for _ in range(BATCH):
            if not self._heap or self._heap[0][0] > now:
                break
            when, key = heapq.heappop(self._heap)
            if self._due.get(key) != when:
                continue  # stale entry
            del self._due[key]
            try:
                await self._redecide(key)
            except KubeError as err:
                log.warning("retry_failed service=%s error=%s", key, err)
                self.schedule(key)
            if key not in self._due:
                self._attempts.pop(key, None)
