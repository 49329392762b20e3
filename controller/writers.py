"""Writer dispatch: the decisions queued per object (controller.workqueue: one entry per object,
the newest decision wins), and the writer tasks that apply them through kube.Kube in worker
threads. Built and fed by controller.operator.

Handlers never wait for a write: kopf's per-object worker ends as soon as the decision is queued,
so a burst of new Services holds a small Work per Service, not kopf's worker and body. Events go
to a queue of their own with their own posters: a Service's IP never waits behind an Event (its
own or another's), and a burst's Events follow its writes instead of taking turns with them.
Conflicts (409) are resolved by re-reading the Service and deciding again; other failures go to
controller.retries with capped backoff, so a flaky API delays convergence but loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from controller.events import EventWrite
from controller.kube import Conflict, DryRun, Kube, KubeError, NotLeader
from controller.observed import ServiceWrite
from controller.reconciler import Decisions, Reconciler
from controller.retries import Retries
from controller.workqueue import KeyedQueue
from lbctl.core.model import ServiceKey, service_key

log = logging.getLogger("lbctl.controller")
T = TypeVar("T")

MAX_REDECIDE = 5  # 409s in a row for one write before it goes to the retry list
WORKERS = 8  # Service writers, and threads making their API calls
EVENT_WORKERS = 2  # Event posters (best effort, after the writes), each with a thread too


@dataclass(frozen=True, slots=True)
class Work:
    """What is left to do about one object: its patch, then its Events. `settle`: build the
    patch (and Events) from the reconciler's state when a writer takes it (Decisions.settle)."""

    write: ServiceWrite | None = None
    events: tuple[EventWrite, ...] = ()
    depth: int = 0  # 409s in a row that led to this write
    settle: bool = False


def merge(waiting: Work, newer: Work) -> Work:
    """A newer decision replaces the waiting patch (it was made from a newer or equal view of
    the object; `settle` reads the newest); Events are never dropped."""
    events = waiting.events + newer.events
    if newer.write is None and not newer.settle:
        return Work(waiting.write, events, waiting.depth, waiting.settle)
    return Work(newer.write, events, newer.depth, newer.settle)


WorkKey = tuple[str, str, str]  # kind, namespace, name of the object written or reported on


class Deciding(Protocol):
    """What the writers ask of the operator: its current state and a way to decide again."""

    @property
    def reconciler(self) -> Reconciler: ...
    @property
    def active(self) -> bool: ...
    async def redecide(self, key: ServiceKey, depth: int = 0) -> None: ...


class Writers:
    """The queue of work and `workers` tasks applying it; `call` runs any API call in their
    thread pool (the operator's reads too), so the event loop never blocks on the API."""

    def __init__(
        self, kube: Kube, deciding: Deciding, retries: Retries, workers: int = WORKERS
    ) -> None:
        self.kube, self._deciding, self._retries = kube, deciding, retries
        self._pool = ThreadPoolExecutor(
            max_workers=workers + EVENT_WORKERS, thread_name_prefix="lbctl-kube"
        )
        self._workers = workers
        self._work: KeyedQueue[WorkKey, Work] = KeyedQueue(merge)
        # Events per object, in order; never dropped by a newer decision (concatenated).
        self._events: KeyedQueue[WorkKey, tuple[EventWrite, ...]] = KeyedQueue(
            lambda waiting, newer: waiting + newer
        )

    def apply(self, decisions: Decisions, depth: int = 0) -> None:
        """Queue the decisions for the writers (never waits for the API)."""
        for write in decisions.services:
            ns, name = write.key.split("/", 1)
            self._work.put(("Service", ns, name), Work(write=write, depth=depth))
        for event in decisions.events:
            ref = event.ref
            self._events.put((ref.kind, ref.namespace, ref.name), (event,))
        for key in decisions.settle:
            ns, name = key.split("/", 1)
            self._work.put(("Service", ns, name), Work(depth=depth, settle=True))

    def clear(self) -> None:
        self._work.clear()
        self._events.clear()

    def queued(self) -> int:
        """Objects with a write or Events waiting (those being written not counted)."""
        return self._work.waiting() + self._events.waiting()

    def start(self) -> list[asyncio.Task[None]]:
        """The tasks applying queued work, `workers` objects at a time. Created at once, before
        kopf starts (runner): kopf waits at exit for tasks created after it, about 5 s."""
        loop = asyncio.get_running_loop()
        writers = [
            loop.create_task(self._writer(), name=f"lbctl-writer-{i}") for i in range(self._workers)
        ]
        posters = [
            loop.create_task(self._poster(), name=f"lbctl-events-{i}") for i in range(EVENT_WORKERS)
        ]
        return writers + posters

    async def _writer(self) -> None:
        while True:
            key, work = await self._work.get()
            try:
                write, events = work.write, work.events
                if work.settle and self._deciding.active:
                    fresh = self._deciding.reconciler.settle(service_key(key[1], key[2]))
                    write = fresh.services[0] if fresh.services else None
                    events += tuple(fresh.events)
                if write is not None:
                    await self._apply_service(write, work.depth)
                if events:
                    self._events.put(key, events)  # after the write, off its path
            except Exception as err:  # a writer must outlive any one object's surprise
                log.exception("write_crashed object=%s error=%r", "/".join(key), err)
                if key[0] == "Service":
                    self._retries.schedule(service_key(key[1], key[2]))
            finally:
                self._work.done(key)

    async def _apply_service(self, write: ServiceWrite, depth: int) -> None:
        try:
            body, between = await self.call(self.kube.apply_service, write)
        except NotLeader:
            log.debug("write_fenced service=%s", write.key)
        except DryRun:
            pass  # logged by kube; nothing observed, nothing to retry
        except Conflict:
            if depth >= MAX_REDECIDE:
                self._retries.schedule(write.key)
                return
            await self._deciding.redecide(write.key, depth + 1)
        except KubeError as err:
            log.warning("write_failed service=%s error=%s", write.key, err)
            self._retries.schedule(write.key)
        else:
            self._retries.forget(write.key)
            self._deciding.reconciler.observe(body, between)

    async def _poster(self) -> None:
        while True:
            key, events = await self._events.get()
            try:
                for event in events:
                    await self._post(event)
            except Exception as err:  # a poster must outlive any one Event's surprise
                log.exception("event_crashed object=%s error=%r", "/".join(key), err)
            finally:
                self._events.done(key)

    async def _post(self, event: EventWrite) -> None:
        try:
            await self.call(self.kube.post_event, event)
        except (NotLeader, DryRun):
            pass
        except KubeError as err:  # Events are best effort: the condition carries the same news
            log.warning("event_failed reason=%s error=%s", event.reason.value, err)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
