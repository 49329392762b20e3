"""In-memory object store: one global resourceVersion, history and watch fan-out; used by handlers.

Runs on the server's event loop only: every method is synchronous, so each write and its event
publication are atomic with respect to watchers (no event is lost between list and watch).
Stored bodies are never mutated once stored: a new version may share unchanged parts.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import itertools
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lbctl.lab.api import defaulting, validation
from lbctl.lab.api.errors import ApiError, already_exists, conflict, gone, invalid, not_found
from lbctl.lab.api.resources import Registry, ResourceType

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# The alphabet the real generateName suffix draws from (no vowels: no accidental words).
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Event:
    """One change: its resourceVersion, resource key, type and the object before/after."""

    rv: int
    key: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Body
    old: Body | None


@dataclass(eq=False)
class Watcher:
    key: str
    namespace: str | None
    tag: Any = None  # who watches (identity, source, path), for faults that cut them off
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


class Store:
    """All objects of all resources, the global RV counter and the kept event history."""

    def __init__(
        self,
        registry: Registry,
        history: int = 10_000,
        service_cidrs: Iterable[str | defaulting.IPNet] = defaulting.DEFAULT_SERVICE_CIDRS,
    ) -> None:
        self.registry = registry
        self.rv = 0
        self.objects: dict[str, dict[Key, Body]] = {r.key: {} for r in registry.resources}
        # Kept up to date on every write, never rebuilt: a write costs O(1) in the object count.
        self.allocations = defaulting.Allocations(defaulting.service_cidrs(service_cidrs))
        self._ns_sizes: Counter[str] = Counter()  # objects per namespace, for namespace deletion
        # Each resource's keys in list order; dropped when a key comes or goes, sorted on a read.
        self._sorted: dict[str, list[Key]] = {}
        self.history: deque[Event] = deque(maxlen=max(1, history))
        self.dropped_upto = 0  # events with rv <= this may be gone from history
        self.watchers: set[Watcher] = set()
        ns = registry.find("", "v1", "namespaces")
        assert ns is not None
        for name in SYSTEM_NAMESPACES:
            self.create(ns, None, {"metadata": {"name": name}})

    # ---- reads -------------------------------------------------------------------------

    def get(self, res: ResourceType, ns: str | None, name: str) -> Body:
        obj = self.objects[res.key].get((ns or "", name))
        if obj is None:
            raise not_found(res.plural, res.group, name)
        return obj

    def query(
        self, res: ResourceType, ns: str | None, pred: Callable[[Body], bool] | None = None
    ) -> list[Body]:
        """Objects in (namespace, name) order, in `ns` (or all), that `pred` selects."""
        objs = self.objects[res.key]
        keys = self._sorted.get(res.key)
        if keys is None:
            keys = self._sorted[res.key] = sorted(objs)
        if ns is not None:
            # "ns\0" is the least string above ns: the slice holds exactly ns's keys.
            lo = bisect.bisect_left(keys, (ns,))
            keys = keys[lo : bisect.bisect_left(keys, (ns + "\0",), lo)]
        if pred is None:
            return [objs[k] for k in keys]
        return [obj for k in keys if pred(obj := objs[k])]

    def events_since(self, key: str, namespace: str | None, rv: int) -> list[Event]:
        """History of `key` (in `namespace`, or all) after `rv`; 410 if part of it is gone."""
        if rv < self.dropped_upto:
            raise gone(f"too old resource version: {rv} ({self.dropped_upto + 1})")
        # Newest first, stopping at `rv`: a resume costs what it replays, not the whole history.
        newer = itertools.takewhile(lambda e: e.rv > rv, reversed(self.history))
        found = [e for e in newer if e.key == key and _within(namespace, e.obj)]
        return found[::-1]

    def subscribe(self, key: str, namespace: str | None, tag: Any = None) -> Watcher:
        watcher = Watcher(key, namespace, tag)
        self.watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def close_watchers(self, which: Callable[[Any], bool] | None = None) -> None:
        """End watch streams (all, or those whose tag `which` selects)."""
        for watcher in list(self.watchers):
            if which is None or which(watcher.tag):
                watcher.queue.put_nowait(None)

    # ---- writes ------------------------------------------------------------------------

    def _publish(self, res: ResourceType, etype: str, obj: Body, old: Body | None) -> None:
        if len(self.history) == self.history.maxlen:
            self.dropped_upto = self.history[0].rv
        event = Event(self.rv, res.key, etype, obj, old)
        self.history.append(event)
        for watcher in self.watchers:
            if watcher.key == res.key and _within(watcher.namespace, obj):
                watcher.queue.put_nowait(event)

    def _stamp(self, res: ResourceType, obj: Body) -> Body:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["kind"], obj["apiVersion"] = res.kind, res.group_version
        return obj

    def create(self, res: ResourceType, ns: str | None, body: Body) -> Body:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        self._place(res, ns, obj)
        if res.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        elif res.status_on_create == "reset":
            obj["status"] = {"pods": {"phase": "Pending"}, "services": {"loadBalancer": {}}}.get(
                res.plural, {}
            )
        for drop in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(drop, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        if res.has_spec:
            meta["generation"] = 1
        obj = self._prepare(res, obj, None, "")
        self._stamp(res, obj)
        self._put(res, obj, None)
        self._publish(res, "ADDED", obj, None)
        return obj

    def _put(self, res: ResourceType, obj: Body, old: Body | None) -> None:
        """Store `obj` (replacing `old`), keeping the allocation index and namespace sizes."""
        ns = obj["metadata"].get("namespace", "")
        self.objects[res.key][(ns, obj["metadata"]["name"])] = obj
        if old is None:
            self._sorted.pop(res.key, None)
            if ns:
                self._ns_sizes[ns] += 1
        if res.key == "v1/services":
            if old is not None:
                self.allocations.release(old)
            self.allocations.hold(obj)

    def _drop(self, res: ResourceType, old: Body) -> None:
        ns = old["metadata"].get("namespace", "")
        del self.objects[res.key][(ns, old["metadata"]["name"])]
        self._sorted.pop(res.key, None)
        if ns:
            self._ns_sizes[ns] -= 1  # a zero left behind costs one entry per namespace ever made
        if res.key == "v1/services":
            self.allocations.release(old)

    def _place(self, res: ResourceType, ns: str | None, obj: Body) -> None:
        meta = obj["metadata"]
        if res.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            meta["namespace"] = ns = ns or meta.get("namespace") or "default"
            self._check_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    res.kind,
                    res.group,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
            meta["name"] = self._generate(res, ns, meta["generateName"])
        validation.check_name(res, meta["name"])
        if (ns or "", meta["name"]) in self.objects[res.key]:
            raise already_exists(res.plural, res.group, meta["name"])

    def _generate(self, res: ResourceType, ns: str | None, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(5))
            if (ns or "", name) not in self.objects[res.key]:
                return name
        raise ApiError(500, f"could not generate a unique name from {prefix!r}")

    def _check_namespace(self, ns: str) -> None:
        nsobj = self.objects["v1/namespaces"].get(("", ns))
        if nsobj is None:
            raise ApiError(
                404, f'namespaces "{ns}" not found', details={"name": ns, "kind": "namespaces"}
            )
        if nsobj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f"unable to create new content in namespace {ns} because it is being terminated",
                reason="Forbidden",
            )

    def _prepare(self, res: ResourceType, obj: Body, old: Body | None, sub: str) -> Body:
        """Defaulting (none on status writes: the spec stays) then validation, as the real one."""
        if res.key == "v1/services" and sub != "status":
            obj = defaulting.default_service(obj, old, self.allocations)
        validation.validate(res, obj)
        return obj

    def update(self, res: ResourceType, ns: str | None, name: str, body: Body, sub: str) -> Body:
        """PUT semantics: RV precondition, then replace the main part or the status."""
        old = self.get(res, ns, name)
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata is required on update")
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({name})",
            )
        want = meta.get("resourceVersion")
        if want and want != old["metadata"]["resourceVersion"]:
            raise conflict(res.plural, res.group, name)
        return self._commit(res, old, body, sub)

    def _commit(self, res: ResourceType, old: Body, body: Body, sub: str) -> Body:
        new = self._merge_parts(res, old, body, sub)
        if old["metadata"].get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or []) - set(
                old["metadata"].get("finalizers") or []
            )
            if added:
                raise ApiError(
                    422,
                    f"Forbidden: no new finalizers can be added if the object "
                    f"is being deleted, found new finalizers {sorted(added)!r}",
                )
        new = self._prepare(res, new, old, sub)
        if _same(new, old):
            return old  # a no-op write neither bumps the resourceVersion nor emits an event
        if res.has_spec and _spec_of(new) != _spec_of(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._stamp(res, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._drop(res, old)
            self._publish(res, "DELETED", new, old)
            self._after_removal(new)
        else:
            self._put(res, new, old)
            self._publish(res, "MODIFIED", new, old)
        return new

    def _merge_parts(self, res: ResourceType, old: Body, body: Body, sub: str) -> Body:
        if sub == "status":
            # Stored bodies are never mutated, so the new one may share the old spec.
            new = {**old, "metadata": copy.deepcopy(old["metadata"])}
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
            return new
        new = copy.deepcopy(body)
        new["metadata"] = meta = dict(new.get("metadata") or {})
        if res.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        for keep in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "namespace",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "resourceVersion",
        ):
            if keep in old["metadata"]:
                meta[keep] = old["metadata"][keep]
            else:
                meta.pop(keep, None)
        return new

    def patch(self, res: ResourceType, ns: str | None, name: str, patched: Body, sub: str) -> Body:
        """Commit a patched copy of the object; a changed resourceVersion is a precondition."""
        old = self.get(res, ns, name)
        want = (patched.get("metadata") or {}).get("resourceVersion")
        if want and want != old["metadata"]["resourceVersion"]:
            raise conflict(res.plural, res.group, name)
        return self._commit(res, old, patched, sub)

    def delete(self, res: ResourceType, ns: str | None, name: str, opts: Body) -> Body:
        old = self.get(res, ns, name)
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise conflict(res.plural, res.group, name)
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(res.plural, res.group, name)
        if old["metadata"].get("deletionTimestamp"):
            return old
        if res.plural == "namespaces":
            return self._delete_namespace(res, old)
        if old["metadata"].get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
            if res.has_spec:
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            self._stamp(res, new)
            self._put(res, new, old)
            self._publish(res, "MODIFIED", new, old)
            return new
        return self._remove(res, old)

    def _remove(self, res: ResourceType, old: Body) -> Body:
        final = copy.deepcopy(old)
        self._stamp(res, final)
        self._drop(res, old)
        self._publish(res, "DELETED", final, old)
        self._after_removal(final)
        return final

    def _delete_namespace(self, res: ResourceType, old: Body) -> Body:
        """Mark Terminating, delete every object inside, drop the namespace once it is empty."""
        name = old["metadata"]["name"]
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
        new["status"] = {"phase": "Terminating"}
        self._stamp(res, new)
        self._put(res, new, old)
        self._publish(res, "MODIFIED", new, old)
        for other in self.registry.resources:
            if other.namespaced:
                for obj in self.query(other, name):
                    self.delete(other, name, obj["metadata"]["name"], {})
        return self.objects[res.key].get(("", name), new)

    def _after_removal(self, obj: Body) -> None:
        ns = obj["metadata"].get("namespace")
        if not ns:
            return
        nsobj = self.objects["v1/namespaces"].get(("", ns))
        if nsobj is None or not nsobj["metadata"].get("deletionTimestamp"):
            return
        if self._ns_sizes[ns] > 0:
            return
        nsres = self.registry.by_key("v1/namespaces")
        self._remove(nsres, nsobj)


def _within(namespace: str | None, obj: Body) -> bool:
    return namespace is None or obj["metadata"].get("namespace") == namespace


def _spec_of(obj: Body) -> Body:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _same(new: Body, old: Body) -> bool:
    strip = ("resourceVersion", "managedFields")
    a = {k: v for k, v in new["metadata"].items() if k not in strip}
    b = {k: v for k, v in old["metadata"].items() if k not in strip}
    return a == b and _spec_of(new) == _spec_of(old) and new.get("status") == old.get("status")
