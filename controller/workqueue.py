"""A keyed work queue (client-go's workqueue, in asyncio): the writes still to make, at most one
entry per object, and never two writers on one object. Used by controller.operator.

Why: a burst of 10,000 new Services must not hold 10,000 decoded bodies, one kopf worker each,
until each one's write is done (controller RSS, docs/performance.md). kopf's handlers decide at
once and return; what is left to do is a small Work per object, and a newer decision about an
object replaces the older one still waiting, so the queue never outgrows the set of objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeyedQueue(Generic[K, V]):
    """put() merges into the waiting value of its key; get() hands a key out to one taker, who
    calls done() when finished. A key put while taken is handed out again after done().

    Keys come out in the order they first became waiting (FIFO), each at most once at a time.
    """

    def __init__(self, merge: Callable[[V, V], V]) -> None:
        self._merge = merge  # (waiting, newer) -> what waits from now on
        self._waiting: dict[K, V] = {}
        self._taken: set[K] = set()
        self._ready: asyncio.Queue[K] = asyncio.Queue()  # waiting keys not taken, in order

    def put(self, key: K, value: V) -> None:
        if key in self._waiting:
            self._waiting[key] = self._merge(self._waiting[key], value)
            return  # already in _ready, or will be on done()
        self._waiting[key] = value
        if key not in self._taken:
            self._ready.put_nowait(key)

    async def get(self) -> tuple[K, V]:
        """The next waiting key and its value; the key is taken until done(key)."""
        while True:
            key = await self._ready.get()
            # Skipped: a key dropped by clear() while queued (or queued again after it and
            # taken meanwhile); done() queues it again if it is waiting then.
            if key in self._waiting and key not in self._taken:
                self._taken.add(key)
                return key, self._waiting.pop(key)

    def done(self, key: K) -> None:
        self._taken.discard(key)
        if key in self._waiting:
            self._ready.put_nowait(key)

    def clear(self) -> None:
        """Forget everything waiting (keys taken now stay taken until their done())."""
        self._waiting.clear()

    def waiting(self) -> int:
        return len(self._waiting)

    def busy(self) -> bool:
        """Anything waiting or taken."""
        return bool(self._waiting or self._taken)
