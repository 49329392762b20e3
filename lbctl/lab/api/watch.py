"""Watch streams: resume from a resourceVersion, initial events, bookmarks; used by handlers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lbctl.lab.api import tables
from lbctl.lab.api.errors import ApiError
from lbctl.lab.api.resources import ResourceType
from lbctl.lab.api.store import Event, Store, Watcher

Body = dict[str, Any]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True)
class WatchSpec:
    """A watch request's parameters, parsed before the stream starts."""

    res: ResourceType
    namespace: str | None
    pred: Callable[[Body], bool]
    resource_version: str
    timeout: float | None
    bookmarks: bool
    send_initial: bool
    table: str | None  # includeObject when the client asked for Tables, else None
    bookmark_interval: float
    drop_after_events: int | None = None
    drop_after_seconds: float | None = None


def translate(event: Event, pred: Callable[[Body], bool]) -> tuple[str, Body] | None:
    """What a filtered watch sees: objects entering/leaving the selection become ADDED/DELETED."""
    now = pred(event.obj)
    if event.type == "ADDED":
        return ("ADDED", event.obj) if now else None
    if event.type == "DELETED":
        return ("DELETED", event.obj) if now else None
    before = event.old is not None and pred(event.old)
    if now and before:
        return ("MODIFIED", event.obj)
    if now:
        return ("ADDED", event.obj)
    return ("DELETED", event.obj) if before else None


def _bookmark(res: ResourceType, rv: int, *, initial_end: bool = False) -> Body:
    meta: Body = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {
        "type": "BOOKMARK",
        "object": {"kind": res.kind, "apiVersion": res.group_version, "metadata": meta},
    }


class WatchStream:
    """One client's watch: computes the start synchronously, then relays store events."""

    def __init__(self, store: Store, spec: WatchSpec, tag: Any = None) -> None:
        self.store, self.spec = store, spec
        self.sent = 0
        # Subscribe and snapshot with no await in between: nothing is lost or duplicated.
        self.watcher: Watcher = store.subscribe(spec.res.key, spec.namespace, tag)
        self.start: list[Body] = []
        self.error: ApiError | None = None
        rv = spec.resource_version
        try:
            if spec.send_initial or rv in ("", "0"):
                objs = store.query(spec.res, spec.namespace, spec.pred)
                self.start = [{"type": "ADDED", "object": o} for o in objs]
                if spec.send_initial and spec.bookmarks:
                    self.start.append(_bookmark(spec.res, store.rv, initial_end=True))
            else:
                for event in store.events_since(spec.res.key, spec.namespace, _rv(rv)):
                    if (seen := translate(event, spec.pred)) is not None:
                        self.start.append({"type": seen[0], "object": seen[1]})
        except ApiError as err:
            self.error = err

    def _render(self, event: Body) -> bytes:
        if self.spec.table is not None and event["type"] != "BOOKMARK" and event["type"] != "ERROR":
            obj = event["object"]
            meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
            event = {
                "type": event["type"],
                "object": tables.table(self.spec.res, [obj], meta, self.spec.table),
            }
        return json.dumps(event, separators=(",", ":")).encode() + b"\n"

    async def run(self, response: web.StreamResponse) -> None:
        try:
            await self._run(response)
        finally:
            self.store.unsubscribe(self.watcher)

    async def _send(self, response: web.StreamResponse, event: Body) -> bool:
        """Write one event; False once the stream must end (drop-after-N fault)."""
        await response.write(self._render(event))
        if event["type"] != "BOOKMARK":
            self.sent += 1
        limit = self.spec.drop_after_events
        return limit is None or self.sent < limit

    async def _run(self, response: web.StreamResponse) -> None:
        if self.error is not None:
            await response.write(self._render({"type": "ERROR", "object": self.error.status()}))
            return
        for event in self.start:
            if not await self._send(response, event):
                return
        deadline = min(
            time.monotonic() + (self.spec.timeout if self.spec.timeout is not None else 1e9),
            time.monotonic() + (self.spec.drop_after_seconds or 1e9),
        )
        next_bookmark = time.monotonic() + self.spec.bookmark_interval
        while (left := deadline - time.monotonic()) > 0:
            queue = self.watcher.queue
            wait = min(left, next_bookmark - time.monotonic()) if self.spec.bookmarks else left
            try:
                # Drain what is queued first: wait_for(get(), 0) would cancel the read before it
                # runs, and a bookmark that is always due would then spin without sending.
                change = (
                    queue.get_nowait()
                    if not queue.empty()
                    else await asyncio.wait_for(queue.get(), max(0.0, wait))
                )
            except TimeoutError:
                if self.spec.bookmarks:
                    await response.write(self._render(_bookmark(self.spec.res, self.store.rv)))
                    next_bookmark = time.monotonic() + self.spec.bookmark_interval
                continue
            if change is None:
                return  # the server is stopping or the source was cut off
            seen = translate(change, self.spec.pred)
            if seen and not await self._send(response, {"type": seen[0], "object": seen[1]}):
                return


def _rv(text: str) -> int:
    try:
        return int(text)
    except ValueError as err:
        raise ApiError(400, f"invalid resource version {text!r}") from err
