"""In-memory object store: one global resourceVersion, history and watch fan-out; used by handlers.

Runs on the server's event loop only: every method is synchronous, so each write and its event
publication are atomic with respect to watchers (no event is lost between list and watch).
Stored bodies are never mutated after being stored: writes store fresh copies.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
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

    def __init__(self, registry: Registry, history: int = 10_000) -> None:
        self.registry = registry
        self.rv = 0
        self.objects: dict[str, dict[Key, Body]] = {r.key: {} for r in registry.resources}
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
        items = [
            obj
            for (ons, _), obj in self.objects[res.key].items()
            if (ns is None or ons == ns) and (pred is None or pred(obj))
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def events_since(self, key: str, namespace: str | None, rv: int) -> list[Event]:
        """History of `key` (in `namespace`, or all) after `rv`; 410 if part of it is gone."""
        if rv < self.dropped_upto:
            raise gone(f"too old resource version: {rv} ({self.dropped_upto + 1})")
        return [
            e
            for e in self.history
            if e.rv > rv
            and e.key == key
            and (namespace is None or e.obj["metadata"].get("namespace") == namespace)
        ]

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
        ns = obj["metadata"].get("namespace")
        for watcher in self.watchers:
            if watcher.key == res.key and (watcher.namespace is None or watcher.namespace == ns):
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
        obj = self._prepare(res, obj, None)
        self._stamp(res, obj)
        self.objects[res.key][(meta.get("namespace", ""), meta["name"])] = obj
        self._publish(res, "ADDED", obj, None)
        return obj

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

    def _prepare(self, res: ResourceType, obj: Body, old: Body | None) -> Body:
        """Defaulting then validation, as the real server's strategy does."""
        if res.key == "v1/services":
            ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
            others = [
                o for (ons, oname), o in self.objects[res.key].items() if (ons, oname) != (ns, name)
            ]
            obj = defaulting.default_service(obj, old, others)
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
        new = self._prepare(res, new, old)
        if _same(new, old):
            return old  # a no-op write neither bumps the resourceVersion nor emits an event
        if res.has_spec and _spec_of(new) != _spec_of(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._stamp(res, new)
        key = (new["metadata"].get("namespace", ""), new["metadata"]["name"])
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.objects[res.key][key]
            self._publish(res, "DELETED", new, old)
            self._after_removal(new)
        else:
            self.objects[res.key][key] = new
            self._publish(res, "MODIFIED", new, old)
        return new

    def _merge_parts(self, res: ResourceType, old: Body, body: Body, sub: str) -> Body:
        if sub == "status":
            new = copy.deepcopy(old)
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
            self.objects[res.key][(ns or "", name)] = new
            self._publish(res, "MODIFIED", new, old)
            return new
        return self._remove(res, old)

    def _remove(self, res: ResourceType, old: Body) -> Body:
        final = copy.deepcopy(old)
        self._stamp(res, final)
        del self.objects[res.key][(old["metadata"].get("namespace", ""), old["metadata"]["name"])]
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
        self.objects[res.key][("", name)] = new
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
        if any(k[0] == ns for objs in self.objects.values() for k in objs):
            return
        nsres = self.registry.by_key("v1/namespaces")
        self._remove(nsres, nsobj)


def _spec_of(obj: Body) -> Body:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _same(new: Body, old: Body) -> bool:
    strip = ("resourceVersion", "managedFields")
    a = {k: v for k, v in new["metadata"].items() if k not in strip}
    b = {k: v for k, v in old["metadata"].items() if k not in strip}
    return a == b and _spec_of(new) == _spec_of(old) and new.get("status") == old.get("status")
