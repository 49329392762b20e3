"""One request through the fault proxy: apply the matching fault, else forward it to the real API
server and stream the answer back, and log it; used by lbctl.lab.faultproxy.

A watch is forwarded event by event (JSON lines or protobuf frames), so a rule can end it after
N events; any other answer is read whole and sent on, headers and encoding untouched.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from lbctl.lab.faults import REQUEST_KINDS, WATCH_KINDS, FaultInjector, FaultKind, FaultRule
from lbctl.lab.reqlog import RequestLog, RequestRecord, request_verb

SA_PREFIX = "system:serviceaccount:"
# Hop-by-hop headers (RFC 9110 7.6.1) and the framing each side sets for itself.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip
# aiohttp's client would add these if the client did not send them; the API server's answer
# must be the one the client asked for (no gzip it cannot read).
NO_AUTO_HEADERS = frozenset({"Accept-Encoding", "User-Agent", "Content-Type"})
REASONS = {409: "Conflict", 410: "Expired", 500: "InternalError", 503: "ServiceUnavailable"}
PROTOBUF_WATCH = "application/vnd.kubernetes.protobuf;stream=watch"


def identity_of(headers: Mapping[str, str]) -> str:
    """The ServiceAccount name in the bearer token's `sub` claim (the API server checks the
    signature; the proxy only reads it); another token as it is; no token: the User-Agent."""
    auth = headers.get("Authorization", "")
    if not auth.lower().startswith("bearer "):
        return headers.get("User-Agent", "")
    token = auth[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return token
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return token
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if isinstance(sub, str) and sub.startswith(SA_PREFIX):
        return sub.rsplit(":", 1)[1]
    return sub if isinstance(sub, str) and sub else token


def status_reply(code: int, message: str, reason: str | None = None) -> web.Response:
    """A metav1 Status answer, as the API server words its own errors."""
    return web.json_response(status_body(code, message, reason), status=code)


def status_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code,
    }  # fmt: skip


def reset_connection(request: web.Request) -> None:
    """Abort with SO_LINGER 0 so the peer sees a TCP RST, as when a server dies mid-request."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass
class Call:
    """What the log needs of one request; `log` writes its record once."""

    started: float
    identity: str
    source: str
    verb: str
    method: str
    path: str
    query: str
    sink: RequestLog
    logged: bool = False
    forwarded: bool = False  # sent on to the API server: logged with its answer, whatever comes

    def log(self, status: int) -> None:
        if self.logged:
            return
        self.logged = True
        record = RequestRecord(
            time=self.started, identity=self.identity, source=self.source, verb=self.verb,
            method=self.method, path=self.path, query=self.query, status=status,
            duration=time.time() - self.started,
        )  # fmt: skip
        self.sink.add(record)


@dataclass(eq=False)
class OpenWatch:
    """A watch being forwarded; `pump` is the task copying its events (cancel it to end it)."""

    identity: str
    source: str
    path: str
    pump: asyncio.Task[None] | None = field(default=None)


class EventSplitter:
    """Cuts a watch stream into whole events: JSON lines, or length-prefixed protobuf frames."""

    def __init__(self, content_type: str) -> None:
        self.frames = content_type.replace(" ", "").startswith(PROTOBUF_WATCH)
        self.buffer = b""

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bool]]:
        """Each complete event in what arrived so far, and whether it is a BOOKMARK."""
        self.buffer += chunk
        while event := self._next():
            yield event, not self.frames and event.startswith(b'{"type":"BOOKMARK"')

    def _next(self) -> bytes:
        if self.frames:
            if len(self.buffer) < 4:
                return b""
            end = 4 + int.from_bytes(self.buffer[:4], "big")
        else:
            end = self.buffer.find(b"\n") + 1
        if end <= 0 or len(self.buffer) < end:
            return b""
        event, self.buffer = self.buffer[:end], self.buffer[end:]
        return event


def forward_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


class Forwarder:
    """Serves the proxy's requests: faults first, then the API server at `upstream`."""

    def __init__(
        self, upstream: str, session: aiohttp.ClientSession, faults: FaultInjector, log: RequestLog
    ) -> None:
        self.upstream, self.session, self.faults, self.log = upstream, session, faults, log
        self.watches: set[OpenWatch] = set()
        self.background: set[asyncio.Task[web.StreamResponse]] = set()

    async def handle(self, request: web.Request, source: str) -> web.StreamResponse:
        identity = identity_of(request.headers)
        verb = request_verb(request.method, request.path, request.query)
        call = Call(
            time.time(), identity, source, verb, request.method, request.path,
            request.query_string, self.log,
        )  # fmt: skip
        try:
            return await self._serve(request, call)
        except (ConnectionResetError, asyncio.CancelledError):
            if not call.forwarded:
                call.log(499)  # nginx's "client closed request": the client went away
            raise

    async def _serve(self, request: web.Request, call: Call) -> web.StreamResponse:
        rule = self.faults.take(REQUEST_KINDS, call.identity, call.source, call.verb, call.path)
        delay = 0.0
        if rule is not None and rule.kind is FaultKind.DELAY:
            delay = rule.delay
        elif rule is not None and rule.kind is FaultKind.RESET:
            reset_connection(request)
            # What aiohttp raises in a handler whose client went away: ends it without a reply.
            raise asyncio.CancelledError("fault injected: connection reset")
        elif rule is not None:
            code = 503 if rule.kind is FaultKind.UNAVAILABLE else rule.status
            call.log(code)
            return status_reply(code, f"fault injected by the fault proxy (rule {rule.id})")
        if call.verb == "watch":
            watch_rule = self.faults.take(
                WATCH_KINDS, call.identity, call.source, call.verb, call.path
            )
            if watch_rule is not None and watch_rule.kind is FaultKind.WATCH_GONE:
                return await self._gone(request, call)
            return await self._watch(request, call, watch_rule, delay)
        body = await request.read()
        # Shielded: a client that gives up (a timeout) does not take back a request already
        # sent; it reaches the API server and is logged with the answer it got there.
        call.forwarded = True
        task = asyncio.create_task(self._forward(request, call, body, delay))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return await asyncio.shield(task)

    def _upstream(self, request: web.Request, body: bytes | None = None) -> Any:
        url = f"{self.upstream}{request.rel_url}"
        return self.session.request(
            request.method, url, headers=forward_headers(request.headers), data=body,
            allow_redirects=False, skip_auto_headers=NO_AUTO_HEADERS,
        )  # fmt: skip

    async def _forward(
        self, request: web.Request, call: Call, body: bytes, delay: float
    ) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        try:
            async with self._upstream(request, body) as up:
                data = await up.read()
                answer = web.Response(
                    status=up.status, body=data, headers=forward_headers(up.headers)
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            answer = status_reply(503, f"fault proxy: API server unreachable: {err}")
        call.log(answer.status)
        return answer

    async def _gone(self, request: web.Request, call: Call) -> web.StreamResponse:
        """A watch answered with one ERROR event carrying a 410 Status, then ended."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        call.log(200)
        gone = status_body(410, "too old resource version: fault injected by the fault proxy")
        await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
        await response.write_eof()
        return response

    async def _watch(
        self, request: web.Request, call: Call, rule: FaultRule | None, delay: float
    ) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        try:
            up = await self._upstream(request)
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            call.log(503)
            return status_reply(503, f"fault proxy: API server unreachable: {err}")
        try:
            if up.status != 200:
                answer = web.Response(
                    status=up.status, body=await up.read(), headers=forward_headers(up.headers)
                )
                call.log(up.status)
                return answer
            return await self._stream(request, call, rule, up)
        finally:
            up.close()

    async def _stream(
        self,
        request: web.Request,
        call: Call,
        rule: FaultRule | None,
        up: aiohttp.ClientResponse,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=forward_headers(up.headers))
        response.enable_chunked_encoding()
        await response.prepare(request)
        call.log(200)  # a watch is logged as it starts, as the API server's audit does
        limit = rule.after_events if rule is not None else None
        splitter = EventSplitter(up.headers.get("Content-Type", ""))
        watch = OpenWatch(call.identity, call.source, call.path)
        watch.pump = asyncio.create_task(self._pump(up, response, splitter, limit))
        self.watches.add(watch)
        try:
            # Ends when the API server ends it, after N events, after `after_seconds`, or when
            # cut_watches() cancels the pump: each a clean end of the stream for the client.
            await asyncio.wait({watch.pump}, timeout=rule.after_seconds if rule else None)
        finally:
            self.watches.discard(watch)
            watch.pump.cancel()
            await asyncio.gather(watch.pump, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    @staticmethod
    async def _pump(
        up: aiohttp.ClientResponse,
        response: web.StreamResponse,
        splitter: EventSplitter,
        limit: int | None,
    ) -> None:
        sent = 0
        async for chunk in up.content.iter_any():
            for event, bookmark in splitter.feed(chunk):
                await response.write(event)
                sent += 0 if bookmark else 1
                if limit is not None and sent >= limit:
                    return

    def cut(self, selects: Callable[[OpenWatch], bool]) -> int:
        """End the open watches `selects` picks (on the loop); how many."""
        cut = [w for w in self.watches if selects(w)]
        for watch in cut:
            if watch.pump is not None:
                watch.pump.cancel()
        return len(cut)
