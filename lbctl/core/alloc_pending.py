"""Pending requests of lbctl.core.allocator, indexed by what could satisfy them.

A request waits in buckets: ("pool", name, family) for each pool and family it could auto-assign
from, ("ip", key) for each address it asked for. Freeing an address looks only in the buckets of
that address and its pool, so Services waiting on other pools are never re-examined. Each bucket
is sorted oldest first (creationTimestamp, then namespace/name): the oldest gets a freed address.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

from lbctl.core.alloc_types import Failure
from lbctl.core.model import Family, PoolName, ServiceKey, ServiceRequest

Bucket = tuple[str, PoolName, Family] | tuple[str, int]
SortKey = tuple[str, str]


def pool_bucket(pool: PoolName, family: Family) -> Bucket:
    return ("pool", pool, family)


def ip_bucket(akey: int) -> Bucket:
    return ("ip", akey)


class _Entry:
    __slots__ = ("buckets", "failure", "req", "sort_key")

    def __init__(self, req: ServiceRequest, failure: Failure, buckets: tuple[Bucket, ...]) -> None:
        self.req = req
        self.failure = failure
        self.buckets = buckets
        self.sort_key: SortKey = (req.created, req.key)


class PendingQueue:
    """Requests that could not be satisfied, oldest first, indexed by bucket."""

    def __init__(self) -> None:
        self._entries: dict[ServiceKey, _Entry] = {}
        self._buckets: dict[Bucket, list[SortKey]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, req: ServiceRequest, failure: Failure, buckets: Iterable[Bucket]) -> None:
        self.remove(req.key)
        entry = _Entry(req, failure, tuple(dict.fromkeys(buckets)))
        self._entries[req.key] = entry
        for b in entry.buckets:
            insort(self._buckets.setdefault(b, []), entry.sort_key)

    def remove(self, key: ServiceKey) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        for b in entry.buckets:
            lst = self._buckets[b]
            del lst[bisect_left(lst, entry.sort_key)]
            if not lst:
                del self._buckets[b]
        return True

    def request(self, key: ServiceKey) -> ServiceRequest | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.req

    def failure(self, key: ServiceKey) -> Failure | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.failure

    def waiting_on(self, buckets: Iterable[Bucket]) -> list[ServiceRequest]:
        """Requests in any of the buckets, oldest first, each once."""
        found: set[SortKey] = set()
        for b in buckets:
            found.update(self._buckets.get(b, ()))
        return [self._entries[ServiceKey(k)].req for _, k in sorted(found)]

    def in_order(self) -> list[ServiceRequest]:
        return [e.req for e in sorted(self._entries.values(), key=lambda e: e.sort_key)]

    def failures(self) -> list[Failure]:
        return [e.failure for e in sorted(self._entries.values(), key=lambda e: e.sort_key)]

    def bucket_sizes(self) -> dict[Bucket, int]:
        return {b: len(v) for b, v in self._buckets.items()}
