"""HTTP verbs on resources (get, list, watch, create, update, patch, delete); used by app."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from lbctl.lab.api import patch as patching
from lbctl.lab.api import protobuf, selectors, tables
from lbctl.lab.api.errors import ApiError, status_body
from lbctl.lab.api.resources import VERSION_INFO, Registry, ResourceType
from lbctl.lab.api.routing import Target
from lbctl.lab.api.store import Store
from lbctl.lab.api.watch import WatchSpec, WatchStream

Body = dict[str, Any]
JSON = "application/json"
# Per-request values the app middleware sets for the handlers.
ON_STREAM: web.RequestKey[Callable[[int], None]] = web.RequestKey("on_stream")  # log it as started
TAG = web.RequestKey("tag", tuple)  # (identity, source, path): which faults can cut it off
WATCH_FAULT = web.RequestKey("watch_fault", object)  # a FaultRule dropping this watch, or None


def reply(body: Body, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type=JSON
    )


def discovery(registry: Registry, target: Target | None, path: str, host: str) -> Body:
    """The discovery document for `path`; 404 for unknown paths."""
    clean = "/" + path.strip("/")
    static = {
        "/": registry.root_paths,
        "/version": lambda: VERSION_INFO,
        "/api": lambda: registry.api_versions(host),
        "/apis": registry.api_group_list,
    }
    found: Body | None = None
    if clean in static:
        found = static[clean]()
    elif target is not None and target.res is None:
        found = registry.resource_list(target.group, target.version)
    elif clean.startswith("/apis/") and clean.count("/") == 2:
        found = registry.api_group(clean.split("/")[2])
    if found is None:
        raise ApiError(404, "the server could not find the requested resource", reason="NotFound")
    return found


async def read_body(request: web.Request) -> Any:
    ctype = request.headers.get("Content-Type", JSON).split(";")[0].strip()
    raw = await request.read()
    if ctype == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(raw)
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise ApiError(
            415, f"the bed's API server reads JSON (and kubectl's protobuf creates), not {ctype}"
        )
    return patching.decode(raw)


def _object_body(body: Any) -> Body:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _check_kind(res: ResourceType, body: Body) -> None:
    kind, api = body.get("kind"), body.get("apiVersion")
    if (kind and kind != res.kind) or (api and api != res.group_version):
        raise ApiError(
            400,
            f"the API version in the data ({api}) does not match the expected "
            f"API version ({res.group_version})",
        )


class Handlers:
    """The resource verbs bound to one store; one instance serves every source."""

    def __init__(self, store: Store, bookmark_interval: float) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        res, q = target.res, request.query
        assert res is not None
        method = request.method
        if target.name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1"):
                    return await self.watch(request, target)
                return self.list(request, target)
            if method == "POST":
                body = _object_body(await read_body(request))
                _check_kind(res, body)
                return reply(self.store.create(res, target.namespace, body), 201)
            if method == "DELETE":
                return self.delete_collection(request, target)
        else:
            return await self._named(request, target, method)
        raise ApiError(405, f"method {method} not allowed", reason="MethodNotAllowed")

    async def _named(self, request: web.Request, target: Target, method: str) -> web.Response:
        res, ns, name = target.res, target.namespace, target.name
        assert res is not None and name is not None
        if method == "GET":
            obj = self.store.get(res, ns, name)
            accept = request.headers.get("Accept", "")
            if tables.wants_table(accept):
                meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                include = request.query.get("includeObject", "Metadata")
                return reply(tables.table(res, [obj], meta, include))
            return reply(obj)
        if method == "PUT":
            body = _object_body(await read_body(request))
            _check_kind(res, body)
            return reply(self.store.update(res, ns, name, body, target.sub))
        if method == "PATCH":
            patch = await read_body(request)
            ctype = request.headers.get("Content-Type", "")
            current = self.store.get(res, ns, name)
            patched = patching.apply_patch(ctype, current, patch)
            return reply(self.store.patch(res, ns, name, patched, target.sub))
        if method == "DELETE":
            raw = await request.read()
            # Typed clients may send DeleteOptions as protobuf: their defaults are all we honour.
            opts = json.loads(raw) if raw.strip() and not raw.startswith(protobuf.MAGIC) else {}
            return reply(self.store.delete(res, ns, name, opts if isinstance(opts, dict) else {}))
        raise ApiError(405, f"method {method} not allowed", reason="MethodNotAllowed")

    def _pred(self, request: web.Request, res: ResourceType) -> Any:
        q = request.query
        return selectors.make_filter(
            q.get("labelSelector"), q.get("fieldSelector"), res.field_labels
        )

    def list(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        assert res is not None
        items = self.store.query(res, target.namespace, self._pred(request, res))
        meta: Body = {"resourceVersion": str(self.store.rv)}
        items = _page(items, request.query, meta)
        if tables.wants_table(request.headers.get("Accept", "")):
            include = request.query.get("includeObject", "Metadata")
            return reply(tables.table(res, items, meta, include))
        return reply(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.group_version,
                "metadata": meta,
                "items": items,
            }
        )

    def delete_collection(self, request: web.Request, target: Target) -> web.Response:
        res = target.res
        assert res is not None
        for obj in self.store.query(res, target.namespace, self._pred(request, res)):
            meta = obj["metadata"]
            self.store.delete(res, meta.get("namespace"), meta["name"], {})
        return reply(status_body(200, "deleted"))

    async def watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        res, q = target.res, request.query
        assert res is not None
        if q.get("sendInitialEvents") == "true" and (
            q.get("resourceVersionMatch") != "NotOlderThan"
            or q.get("allowWatchBookmarks") != "true"
        ):
            raise ApiError(
                422,
                "sendInitialEvents requires allowWatchBookmarks=true and "
                "resourceVersionMatch=NotOlderThan",
            )
        timeout = q.get("timeoutSeconds")
        fault: Any = request.get(WATCH_FAULT)
        accept = request.headers.get("Accept", "")
        spec = WatchSpec(
            res=res,
            namespace=target.namespace,
            pred=self._pred(request, res),
            resource_version=q.get("resourceVersion", ""),
            timeout=float(timeout) if timeout else None,
            bookmarks=q.get("allowWatchBookmarks") == "true",
            send_initial=q.get("sendInitialEvents") == "true",
            table=q.get("includeObject", "Metadata") if tables.wants_table(accept) else None,
            bookmark_interval=self.bookmark_interval,
            drop_after_events=fault.after_events if fault else None,
            drop_after_seconds=fault.after_seconds if fault else None,
        )
        stream = WatchStream(self.store, spec, request.get(TAG))
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        request[ON_STREAM](200)
        with contextlib.suppress(ConnectionError):  # the client went away: nothing to tell it
            await stream.run(response)
        return response


def _page(items: list[Body], q: Any, meta: Body) -> list[Body]:
    """Apply limit/continue; the token carries the list's RV and the last key served."""
    start = 0
    if token := q.get("continue"):
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
            last = tuple(state["last"])
            meta["resourceVersion"] = state["rv"]
        except (ValueError, KeyError, TypeError) as err:
            raise ApiError(400, "continue key is not valid") from err
        start = next(
            (i for i, o in enumerate(items) if _key(o) > last),
            len(items),
        )
    limit = int(q.get("limit") or 0)
    if limit <= 0 or start + limit >= len(items):
        return items[start:]
    page = items[start : start + limit]
    state = {"rv": meta["resourceVersion"], "last": list(_key(page[-1]))}
    meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
    meta["remainingItemCount"] = len(items) - start - limit
    return page


def _key(obj: Body) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
