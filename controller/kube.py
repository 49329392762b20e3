"""The controller's one writer to the Kubernetes API, and the only controller module that
imports the `kubernetes` client (an import-linter contract in pyproject.toml holds both): Service
status and annotations, Events, and the Lease, all on one ApiClient; also the controller's few
reads. Called from worker threads by controller.writers, controller.operator and (the Lease)
controller.lease. kopf does the watches, on its own connection; it writes nothing.

Every Service write and Event first asks `leader()` (the HA fencing hook): a replica that is not
the leader, or a leader past its renew deadline, writes nothing. Every Service write carries the
resourceVersion the decision was made on, so a stale decision fails with Conflict (409) instead
of overwriting. Lease writes are not fenced (they are how a replica becomes the leader); they
carry the Lease's resourceVersion, so a lost race is a 409 too.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client

from controller.events import COMPONENT, EventWrite
from controller.observed import ServiceWrite
from lbctl.core.timefmt import rfc3339

log = logging.getLogger("lbctl.controller.kube")
T = TypeVar("T")

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
PAGE = 500  # list page size: bounded memory per request at 10,000 Services
TIMEOUT = (5.0, 30.0)  # connect, read (seconds) for every non-watch request
Body = dict[str, Any]


class KubeError(Exception):
    """A request that failed; `status` is the HTTP status (0: no answer at all)."""

    def __init__(self, doing: str, status: int, detail: str = "") -> None:
        super().__init__(f"{doing}: HTTP {status} {detail}".rstrip())
        self.status = status


class Conflict(KubeError):
    """409: the object changed since it was read; re-read and decide again."""


class NotFound(KubeError):
    """404: the object is gone."""


class NotLeader(Exception):
    """The fencing hook said no: this replica must not write."""


class DryRun(Exception):
    """--dry-run: the write was logged (object and patch), not made."""


def _raise(doing: str, err: Exception) -> KubeError:
    if isinstance(err, client.exceptions.ApiException):
        status = int(err.status or 0)
        detail = str(err.reason or "")
        kind = {409: Conflict, 404: NotFound}.get(status, KubeError)
        return kind(doing, status, detail)
    return KubeError(doing, 0, f"{type(err).__name__}: {err}")


_FAILURES = (client.exceptions.ApiException, urllib3.exceptions.HTTPError, OSError)


class Kube:
    """Reads and writes for one controller replica, through one `kubernetes` ApiClient."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        leader: Callable[[], bool] = lambda: True,
        on_write: Callable[[str, str], None] | None = None,
        instance: str | None = None,
        dry_run: bool = False,
    ) -> None:
        self.dry_run = dry_run
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.leader = leader
        self._on_write = on_write or (lambda kind, result: None)
        self.instance = instance or socket.gethostname()
        self._seq = itertools.count()

    # --- reads ------------------------------------------------------------------------------

    def _list(self, doing: str, call: Callable[..., Any], keep: Callable[[Body], T]) -> list[T]:
        """Every object, page by page; `keep` reduces each one as its page arrives."""
        items: list[T] = []
        token: str | None = None
        for _ in range(100_000):  # bounded: a page per PAGE objects
            try:
                kwargs: dict[str, Any] = {"limit": PAGE, "_request_timeout": TIMEOUT}
                if token:
                    kwargs["_continue"] = token
                page = json.loads(call(_preload_content=False, **kwargs).data)
            except _FAILURES as err:
                raise _raise(doing, err) from err
            items += [keep(item) for item in page.get("items") or []]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        return items

    def list_services(self, keep: Callable[[Body], T]) -> list[T]:
        """Services, each reduced by `keep` as its page arrives (never all bodies at once)."""
        return self._list("listing services", self.core.list_service_for_all_namespaces, keep)

    def list_namespaces(self) -> list[Body]:
        return self._list("listing namespaces", self.core.list_namespace, lambda b: b)

    def get_configmap(self, namespace: str, name: str) -> Body | None:
        doing = f"reading configmap {namespace}/{name}"
        return self._get(doing, self.core.read_namespaced_config_map, namespace, name)

    def namespace_exists(self, name: str) -> bool:
        """By a list with fieldSelector=metadata.name=NAME: the `list` the controller's RBAC
        grants already (it watches Namespaces), not a `get` that only this would use."""
        doing = f"looking for namespace {name}"
        try:
            resp: Any = self.core.list_namespace(
                field_selector=f"metadata.name={name}",
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        except _FAILURES as err:
            raise _raise(doing, err) from err
        return bool(_json(doing, resp.data).get("items"))

    def get_service(self, namespace: str, name: str) -> Body | None:
        doing = f"reading service {namespace}/{name}"
        return self._get(doing, self.core.read_namespaced_service, namespace, name)

    def _get(self, doing: str, call: Callable[..., Any], namespace: str, name: str) -> Body | None:
        try:
            resp = call(name, namespace, _preload_content=False, _request_timeout=TIMEOUT)
        except _FAILURES as err:
            found = _raise(doing, err)
            if isinstance(found, NotFound):
                return None
            raise found from err
        body: Body = json.loads(resp.data)
        return body

    # --- writes -----------------------------------------------------------------------------

    def _pretend(self, kind: str, what: str, patch: Body) -> None:
        """--dry-run: say the write this would make, instead of making it."""
        text = json.dumps(patch, sort_keys=True, separators=(",", ":"))
        log.info("dry_run_write kind=%s object=%s patch=%s", kind, what.replace(" ", "/", 1), text)
        self._on_write(kind, "dry_run")

    def _fence(self, doing: str) -> None:
        if not self.leader():
            self._on_write("fenced", "skipped")
            raise NotLeader(doing)

    def apply_service(self, write: ServiceWrite) -> tuple[Body, str | None]:
        """Patch status (strategic merge) then annotations (merge).

        Returns the final body and, when two patches were made, the resourceVersion in between:
        the watch will show that half-written state, which needs no decision.
        """
        rv = write.resource_version
        status, annotations = write.status, write.annotations  # each built once, here
        if self.dry_run:
            self._fence(f"patching service {write.key}")
            if status is not None:
                self._pretend("status", f"Service {write.key}", {"status": status})
            if annotations is not None:
                self._pretend(
                    "metadata", f"Service {write.key}", {"metadata": {"annotations": annotations}}
                )
            raise DryRun(write.key)
        body: Body = {}
        between: str | None = None
        if status is not None:
            patch = {"metadata": {"resourceVersion": rv}, "status": status}
            body = self._patch(write, "status", patch, STRATEGIC)
            rv = str(body["metadata"]["resourceVersion"])
        if annotations is not None:
            patch = {"metadata": {"resourceVersion": rv, "annotations": annotations}}
            between = rv if status is not None else None
            body = self._patch(write, "metadata", patch, MERGE)
        return body, between

    def _patch(self, write: ServiceWrite, kind: str, patch: Body, ctype: str) -> Body:
        doing = f"patching {kind} of service {write.key}"
        self._fence(doing)
        status = kind == "status"
        core = self.core
        call = core.patch_namespaced_service_status if status else core.patch_namespaced_service
        try:
            resp: Any = call(
                write.name,
                write.namespace,
                patch,
                _preload_content=False,
                _content_type=ctype,
                _request_timeout=TIMEOUT,
            )
        except _FAILURES as err:
            failed = _raise(doing, err)
            self._on_write(kind, str(failed.status))
            raise failed from err
        self._on_write(kind, "ok")
        result: Body = json.loads(resp.data)
        return result

    def post_event(self, event: EventWrite) -> None:
        """Create a core/v1 Event (what `kubectl describe` lists) about event.ref."""
        ref = event.ref
        doing = f"posting event {event.reason} on {ref.kind.lower()} {ref.namespace}/{ref.name}"
        self._fence(doing)
        now = rfc3339(datetime.now(UTC))
        name = f"{ref.name}.{time.time_ns():x}{next(self._seq):x}"
        involved = {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name}
        involved["apiVersion"] = ref.api_version
        if ref.uid:
            involved["uid"] = ref.uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace},
            "involvedObject": involved,
            "reason": event.reason.value,
            "message": event.message,
            "type": event.type.value,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        if self.dry_run:
            self._pretend("event", f"{ref.kind} {ref.namespace}/{ref.name}", body)
            raise DryRun(doing)
        try:
            resp: Any = self.core.create_namespaced_event(
                ref.namespace, cast(Any, body), _preload_content=False, _request_timeout=TIMEOUT
            )
            # Read the answer, unused: an unread one keeps its connection out of the pool, and
            # the next request pays a new TLS handshake (one per Event, 15 % of the controller's
            # CPU for 2,000 Services created before it started, docs/performance.md).
            resp.drain_conn()
        except _FAILURES as err:
            failed = _raise(doing, err)
            self._on_write("event", str(failed.status))
            raise failed from err
        self._on_write("event", "ok")

    # --- the Lease (unfenced; controller.lease's elector decides) -----------------------------

    def read_lease(self, namespace: str, name: str, timeout: float) -> Body | None:
        """The Lease's raw JSON (its MicroTime strings untouched), or None if there is none."""
        doing = f"reading lease {namespace}/{name}"
        try:
            resp: Any = self.coordination.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=timeout
            )
        except _FAILURES as err:
            found = _raise(doing, err)
            if isinstance(found, NotFound):
                return None
            raise found from err
        return _json(doing, resp.data)

    def create_lease(self, namespace: str, body: Body, timeout: float) -> Body:
        doing = f"creating lease {namespace}/{body['metadata']['name']}"
        call = self.coordination.create_namespaced_lease
        return self._lease_write(doing, "lease", call, namespace, body, timeout=timeout)

    def replace_lease(self, namespace: str, body: Body, timeout: float) -> Body:
        name = body["metadata"]["name"]
        doing = f"replacing lease {namespace}/{name}"
        call = self.coordination.replace_namespaced_lease
        return self._lease_write(doing, "lease", call, name, namespace, body, timeout=timeout)

    def _lease_write(
        self, doing: str, kind: str, call: Callable[..., Any], *args: Any, timeout: float
    ) -> Body:
        try:
            resp = call(*args, _preload_content=False, _request_timeout=timeout)
        except _FAILURES as err:
            failed = _raise(doing, err)
            self._on_write(kind, str(failed.status))
            raise failed from err
        self._on_write(kind, "ok")
        return _json(doing, resp.data)


def _json(doing: str, data: bytes) -> Body:
    try:
        body: Body = json.loads(data)
    except ValueError as err:
        raise KubeError(doing, 0, f"unreadable answer: {err}") from err
    return body
