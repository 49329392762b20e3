"""The controller's keyed work queue and how the operator merges work for one object."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from controller.events import EventReason, EventType, EventWrite, ObjectRef
from controller.observed import Desired, Observed, ServiceWrite, plan
from controller.workqueue import KeyedQueue
from controller.writers import Work, merge


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def concat(waiting: str, newer: str) -> str:
    return waiting + newer


async def drain(q: KeyedQueue[str, str], n: int) -> list[tuple[str, str]]:
    """Take n items, finishing each before taking the next."""
    out = []
    for _ in range(n):
        key, value = await asyncio.wait_for(q.get(), 1)
        out.append((key, value))
        q.done(key)
    return out


def test_keys_come_out_in_first_put_order_withmerged_values() -> None:
    async def main() -> list[tuple[str, str]]:
        q: KeyedQueue[str, str] = KeyedQueue(concat)
        for key, value in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1"), ("b", "2")]:
            q.put(key, value)
        assert q.waiting() == 3
        got = await drain(q, 3)
        assert not q.busy()
        return got

    assert run(main()) == [("a", "12"), ("b", "12"), ("c", "1")]


def test_a_key_put_while_taken_waits_until_done() -> None:
    async def main() -> None:
        q: KeyedQueue[str, str] = KeyedQueue(concat)
        q.put("a", "1")
        key, _ = await q.get()
        q.put("a", "2")  # a newer decision while the first write is in flight
        q.put("b", "1")
        second = asyncio.ensure_future(q.get())
        assert await asyncio.wait_for(second, 1) == ("b", "1")  # "a" is not handed out twice
        third = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        assert not third.done()
        q.done("b")
        await asyncio.sleep(0)
        assert not third.done()  # still taken
        q.done(key)
        assert await asyncio.wait_for(third, 1) == ("a", "2")
        q.done("a")
        assert not q.busy()

    run(main())


def test_clear_drops_waiting_work_but_keeps_taken_keys_exclusive() -> None:
    async def main() -> None:
        q: KeyedQueue[str, str] = KeyedQueue(concat)
        q.put("a", "1")
        q.put("b", "1")
        key, _ = await q.get()  # "a" taken
        q.clear()
        assert q.waiting() == 0
        assert q.busy()  # "a" is still being worked on
        q.put("a", "2")
        q.put("b", "2")
        # The stale queue entry for "b" and the new one yield "b" once; "a" only after done().
        assert await asyncio.wait_for(q.get(), 1) == ("b", "2")
        q.done("b")
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == ("a", "2")
        q.done("a")
        assert not q.busy()

    run(main())


def _event(reason: EventReason) -> EventWrite:
    return EventWrite(ObjectRef("Service", "default", "web"), EventType.NORMAL, reason, "m")


def _write(rv: str) -> ServiceWrite:
    body = {"metadata": {"namespace": "default", "name": "web", "resourceVersion": rv}}
    write = plan(Observed.of(body), Desired((), None, "public"), datetime(2026, 1, 1, tzinfo=UTC))
    assert write is not None
    return write


@pytest.mark.parametrize(
    ("newer", "expect_write", "expect_settle"),
    [
        (Work(events=(_event(EventReason.IP_RELEASED),)), "old", False),
        (Work(write=_write("2")), "new", False),
        (Work(settle=True), None, True),
    ],
    ids=["events-only", "newer-write", "settle"],
)
def testmerge_keeps_every_event_and_the_newest_decision(
    newer: Work, expect_write: str | None, expect_settle: bool
) -> None:
    old = Work(write=_write("1"), events=(_event(EventReason.IP_ALLOCATED),))
    merged = merge(old, newer)
    assert merged.events == old.events + newer.events
    want = {"old": old.write, "new": newer.write, None: None}[expect_write]
    assert merged.write is want
    assert merged.settle is expect_settle
