"""A small JSON client for the Kubernetes API over aiohttp (list, create, merge-patch, delete,
watch); used by the lab kubelet."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml

Body = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeApiError(RuntimeError):
    """An API call failed; carries the HTTP status (0 when the server could not be reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def collection(api_version: str, plural: str, namespace: str | None = None) -> str:
    """URL path of a collection: ("apps/v1", "deployments", "ns") -> /apis/apps/v1/namespaces/…"""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to talk to an API server: what a kubeconfig's current context says."""

    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | None = None


def read_kubeconfig(path: Path) -> Endpoint:
    """The current context of a kubeconfig: server, CA file, client certificate or token."""
    config = yaml.safe_load(path.read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    context = contexts.get(current) or next(iter(contexts.values()))
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    server = str(clusters[context["cluster"]]["server"])
    user = users.get(context.get("user", ""), {})
    headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
    cluster = clusters[context["cluster"]]
    ctx = None
    if server.startswith("https:"):
        ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        if user.get("client-certificate"):
            ctx.load_cert_chain(user["client-certificate"], user["client-key"])
    return Endpoint(server, headers, ctx)


class KubeApi:
    """One aiohttp session against one API server; every call bounded by `timeout`."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 5.0) -> None:
        self.server = endpoint.server.rstrip("/")
        self.headers = dict(endpoint.headers)
        self.ssl = endpoint.ssl
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, *, timeout: float = 5.0) -> KubeApi:
        return cls(read_kubeconfig(path), timeout=timeout)

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.ssl if self.ssl is not None else True)
            self._session = aiohttp.ClientSession(headers=self.headers, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, body: Body | None = None, *, content_type: str | None = None
    ) -> Body | None:
        """One call; 404 on GET/DELETE returns None, other errors raise KubeApiError."""
        headers = {"Content-Type": content_type or "application/json"}
        data = json.dumps(body) if body is not None else None
        try:
            async with self.session.request(
                method,
                self.server + path,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                text = await resp.text()
                if resp.status == 404 and method in ("GET", "DELETE"):
                    return None
                if resp.status >= 400:
                    raise KubeApiError(f"{method} {path}: {resp.status} {text[:300]}", resp.status)
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as err:
            raise KubeApiError(f"{method} {path}: {err!r}") from err

    async def list(self, path: str) -> list[Body]:
        found = await self.request("GET", path)
        return list((found or {}).get("items") or [])

    async def create(self, path: str, body: Body) -> Body:
        return await self.request("POST", path, body) or {}

    async def patch(self, path: str, body: Body) -> Body:
        """A JSON merge patch (RFC 7386) of `path` (append "/status" for the subresource)."""
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH) or {}

    async def put(self, path: str, body: Body) -> Body:
        return await self.request("PUT", path, body) or {}

    async def delete(self, path: str, body: Body | None = None) -> None:
        await self.request("DELETE", path, body)

    async def watch(
        self, path: str, timeout_seconds: int = 60, query: str = ""
    ) -> AsyncIterator[Body]:
        """Yield watch events of a collection until the server ends the stream; `query` is
        more of the query string (`fieldSelector=...`)."""
        url = f"{self.server}{path}?watch=true&allowWatchBookmarks=true"
        url += f"&timeoutSeconds={timeout_seconds}" + (f"&{query}" if query else "")
        try:
            async with self.session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout_seconds + 5, sock_connect=5)
            ) as resp:
                if resp.status >= 400:
                    raise KubeApiError(f"watch {path}: {resp.status}", resp.status)
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as err:
            raise KubeApiError(f"watch {path}: {err!r}") from err
