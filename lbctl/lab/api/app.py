"""One aiohttp application per source over a shared store: identity, faults, request log."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lbctl.lab import reqlog
from lbctl.lab.api import routing
from lbctl.lab.api.errors import ApiError, status_body
from lbctl.lab.api.handlers import ON_STREAM, TAG, WATCH_FAULT, Handlers, discovery, reply
from lbctl.lab.api.resources import Registry
from lbctl.lab.faults import REQUEST_KINDS, WATCH_KINDS, FaultInjector, FaultKind

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Shared:
    """What every source's application shares: registry, store handlers, faults, log."""

    def __init__(
        self,
        registry: Registry,
        handlers: Handlers,
        faults: FaultInjector,
        log: reqlog.RequestLog,
    ) -> None:
        self.registry, self.handlers, self.faults, self.log = registry, handlers, faults, log


def identity_of(request: web.Request) -> str:
    """The bearer token if any (kubeconfigs name the component there), else the User-Agent."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("User-Agent", "")


def reset_connection(request: web.Request) -> None:
    """Abort with SO_LINGER 0 so the peer sees a TCP RST, as when a server dies mid-request."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def build_app(shared: Shared, source: str) -> web.Application:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _serve(shared, source, request)

    app = web.Application(middlewares=[middleware], client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", _unreachable)
    return app


async def _unreachable(request: web.Request) -> web.StreamResponse:
    raise AssertionError("the middleware answers every request")


async def _serve(shared: Shared, source: str, request: web.Request) -> web.StreamResponse:
    started, identity = time.time(), identity_of(request)
    path, logged = request.path, False
    verb = "get"

    def log(status: int) -> None:
        nonlocal logged
        if not logged:
            logged = True
            shared.log.add(
                reqlog.RequestRecord(
                    time=started,
                    identity=identity,
                    source=source,
                    verb=verb,
                    method=request.method,
                    path=path,
                    query=request.query_string,
                    status=status,
                    duration=time.time() - started,
                )
            )

    request[ON_STREAM] = log
    request[TAG] = (identity, source, path)
    try:
        target = routing.parse(shared.registry, path)
        # Discovery and non-resource paths are "get", like RBAC's nonResourceURLs.
        is_named = target is None or target.res is None or target.name is not None
        verb = reqlog.kube_verb(request.method, is_named, dict(request.query))
        response = await _faulted(shared, source, request, identity, verb)
        if response is None:
            response = await _dispatch(shared, request, target)
    except ApiError as err:
        response = reply(err.status(), err.code)
    except (ConnectionResetError, asyncio.CancelledError):
        log(499)  # nginx's "client closed request": the client went away
        raise
    log(response.status)
    return response


async def _faulted(
    shared: Shared, source: str, request: web.Request, identity: str, verb: str
) -> web.StreamResponse | None:
    """Apply the first matching request fault; a response to send instead, or None."""
    path = request.path
    rule = shared.faults.take(REQUEST_KINDS, identity, source, verb, path)
    if rule is not None:
        if rule.kind is FaultKind.DELAY:
            await asyncio.sleep(rule.delay)
        elif rule.kind is FaultKind.RESET:
            reset_connection(request)
            raise ConnectionResetError("fault injected: connection reset")
        else:
            code = 503 if rule.kind is FaultKind.UNAVAILABLE else rule.status
            message = f"fault injected by the bed (rule {rule.id})"
            return reply(status_body(code, message), code)
    if verb == "watch":
        rule = shared.faults.take(WATCH_KINDS, identity, source, verb, path)
        if rule is not None and rule.kind is FaultKind.WATCH_GONE:
            return await _gone_stream(request)
        request[WATCH_FAULT] = rule
    return None


async def _gone_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    status = status_body(
        410, "too old resource version: fault injected by the bed", reason="Expired"
    )
    await response.write(reply_line({"type": "ERROR", "object": status}))
    return response


def reply_line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


async def _dispatch(
    shared: Shared, request: web.Request, target: routing.Target | None
) -> web.StreamResponse:
    if target is not None and target.res is not None:
        return await shared.handlers.handle(request, target)
    if request.path in ("/healthz", "/readyz", "/livez"):
        return web.Response(text="ok")
    if request.method != "GET":
        raise ApiError(405, f"method {request.method} not allowed", reason="MethodNotAllowed")
    return reply(discovery(shared.registry, target, request.path, request.host))
