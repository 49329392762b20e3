"""controller.retries: a failed write is decided again after its backoff, and the loop sleeps
until something is due instead of waking on a fixed tick."""

from __future__ import annotations

import asyncio
import itertools
import time

from controller.kube import KubeError
from controller.retries import RETRY_DELAYS, Retries
from lbctl.core.model import ServiceKey, service_key

KEY = service_key("default", "web")


class Counting:
    """A monotonic clock that counts how often it is read (each read is one loop wake-up)."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return time.monotonic()


def test_retry_is_redecided_after_its_backoff_and_not_before() -> None:
    async def scenario() -> list[float]:
        done: list[float] = []
        fired = asyncio.Event()

        async def redecide(key: ServiceKey) -> None:
            done.append(time.monotonic())
            fired.set()

        retries = Retries(redecide, sweep=_never)
        task = asyncio.create_task(retries.run())
        start = time.monotonic()
        retries.schedule(KEY)
        await asyncio.wait_for(fired.wait(), 5)
        task.cancel()
        return [t - start for t in done]

    (after,) = asyncio.run(scenario())
    assert RETRY_DELAYS[0] - 0.01 <= after < RETRY_DELAYS[0] + 1.0


def test_idle_loop_sleeps_instead_of_polling() -> None:
    async def scenario() -> int:
        clock = Counting()
        retries = Retries(_never_key, sweep=_never, clock=clock)
        task = asyncio.create_task(retries.run())
        await asyncio.sleep(0.5)  # the span observed: an idle loop reads the clock 0 times
        task.cancel()
        return clock.reads

    assert asyncio.run(scenario()) <= 1


def test_failed_redecide_backs_off_further() -> None:
    async def scenario() -> list[float]:
        times: list[float] = []
        third = asyncio.Event()

        async def failing(key: ServiceKey) -> None:
            times.append(time.monotonic())
            if len(times) == 3:
                third.set()
            raise KubeError("reading service", 503)

        retries = Retries(failing, sweep=_never)
        task = asyncio.create_task(retries.run())
        retries.schedule(KEY)
        await asyncio.wait_for(third.wait(), 10)
        task.cancel()
        return [b - a for a, b in itertools.pairwise(times)]

    gaps = asyncio.run(scenario())
    assert gaps[0] >= RETRY_DELAYS[1] - 0.01
    assert gaps[1] >= RETRY_DELAYS[2] - 0.01


def test_forgotten_key_is_not_redecided() -> None:
    async def scenario() -> int:
        calls: list[ServiceKey] = []
        swept = asyncio.Event()

        async def redecide(key: ServiceKey) -> None:
            calls.append(key)

        async def sweep() -> None:
            swept.set()

        retries = Retries(redecide, sweep=sweep)
        task = asyncio.create_task(retries.run())
        retries.schedule(KEY)
        retries.forget(KEY)
        retries.sweep_after(RETRY_DELAYS[0] + 0.2)  # due after the forgotten retry would be
        await asyncio.wait_for(swept.wait(), 5)
        task.cancel()
        return len(calls)

    assert asyncio.run(scenario()) == 0


async def _never() -> None:
    raise AssertionError("not expected")


async def _never_key(key: ServiceKey) -> None:
    raise AssertionError("not expected")
