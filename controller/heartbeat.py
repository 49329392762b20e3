"""The controller's liveness: a task on the event loop beats; /livez (from the health server's
thread) fails when it has not beaten for a while, i.e. the loop is stuck. Used by runner."""

from __future__ import annotations

import asyncio
import time

PERIOD = 1.0  # seconds between beats
GRACE = 15.0  # /livez fails when the loop has not beaten for this long


class Heartbeat:
    def __init__(self) -> None:
        self._beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._beat < GRACE

    async def run(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(PERIOD)
