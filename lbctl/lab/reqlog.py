"""Per-identity request log, in memory and as JSON lines; written by the fault proxy (and the
embedded server's middleware); read by tests."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

LOG_ENV = "LBCTL_REQUEST_LOG"
# In memory, the newest records only: a lab left running for days must not grow without bound
# (about 60 MB at this size); the JSON-lines file, when set, keeps everything.
MEMORY_RECORDS = 200_000


@dataclass(frozen=True)
class RequestRecord:
    """One answered request. `verb` is the Kubernetes verb (get, list, watch, patch, ...)."""

    time: float
    identity: str
    source: str
    verb: str
    method: str
    path: str
    query: str
    status: int
    duration: float


class RequestLog:
    """Thread-safe: appended from the server loop, read from test threads."""

    def __init__(self, path: Path | None = None, *, keep: int = MEMORY_RECORDS) -> None:
        env = os.environ.get(LOG_ENV)
        self.path = path if path is not None else (Path(env) if env else None)
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=keep)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(asdict(record), sort_keys=True) + "\n")

    def records(self, *, identity: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records if identity is None or r.identity == identity]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def kube_verb(method: str, is_named: bool, query: dict[str, str]) -> str:
    """Map an HTTP request onto the verb RBAC and audit logs would name."""
    method = method.upper()
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if is_named else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if is_named else "deletecollection",
    }.get(method, method.lower())


# Namespace subresources: /api/v1/namespaces/NS/status names namespace NS, not a resource in it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def request_verb(method: str, path: str, query: Mapping[str, str]) -> str:
    """The verb the API server would log for an HTTP request to `path`, without knowing its
    resources: the URL layout alone, as the API server's RequestInfo reads it."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return method.lower()  # discovery, /healthz, /version: a non-resource URL
    if not rest:
        return method.lower()  # the group's discovery document
    if rest[0] == "watch":  # the deprecated /api/v1/watch/... form
        return "watch"
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        rest = rest[2:]
    return kube_verb(method, len(rest) >= 2, dict(query))
