"""The speaker's indexes, kept as watch events come: EndpointSlices by name and by Service (the
planners take SliceIndex as their `slices`, so a plan reads a Service's slices without
regrouping every slice), and the table that lets equal values many records hold be one object.
Used by speaker.agent."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from lbctl.core.adapt import EndpointSliceInfo
from lbctl.core.model import ServiceKey

T = TypeVar("T")
# Entries the sharing table keeps before it starts afresh: the values it meets in a cluster are
# few (an endpoint is a node and three flags, a condition's time a second of a write burst), so
# a full table means values that do not repeat; forgetting them costs sharing, never correctness.
SHARED_LIMIT = 4096


class Sharing:
    """Equal values as one object: `share(value)` returns the first equal value it was given
    (a node's endpoint, a tuple of endpoints, a condition's lastTransitionTime). Values must be
    hashable and of one kind per equality (no 1 and True side by side)."""

    def __init__(self, limit: int = SHARED_LIMIT) -> None:
        self._seen: dict[Any, Any] = {}
        self._limit = limit

    def __call__(self, value: T) -> T:
        seen = self._seen.get(value)
        if seen is not None:
            return seen  # type: ignore[no-any-return]
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen[value] = value
        return value


class SliceIndex(Mapping[ServiceKey, tuple[EndpointSliceInfo, ...]]):
    """ServiceKey -> its EndpointSlices (in no particular order), and every slice by namespace
    and name. One record per slice: a name keyed by the slice's own name string (no (namespace,
    name) tuple per slice), a Service with one slice keyed to the slice itself (no container)."""

    def __init__(self) -> None:
        self._named: dict[str, dict[str, EndpointSliceInfo]] = {}  # namespace -> name -> slice
        self._by: dict[ServiceKey, EndpointSliceInfo | tuple[EndpointSliceInfo, ...]] = {}

    def put(
        self, namespace: str, name: str, info: EndpointSliceInfo | None
    ) -> EndpointSliceInfo | None:
        """Keep `info` as the slice `namespace/name` (None: it is gone); returns the one before."""
        names = self._named.get(namespace, {})
        old = names.get(name)
        if old is not None and old == info:
            return old  # the same slice again (a resync, a label edit elsewhere): keep the record
        if old is not None:
            del names[name]
            self._drop(old)
        if info is not None:
            self._named.setdefault(namespace, {})[name] = info
            self._add(info)
        elif not names:
            self._named.pop(namespace, None)
        return old

    def every(self) -> Iterator[EndpointSliceInfo]:
        """Every slice kept, with or without a Service."""
        for names in self._named.values():
            yield from names.values()

    def _add(self, info: EndpointSliceInfo) -> None:
        if info.service is None:
            return
        known = self._by.get(info.service)
        if known is None:
            self._by[info.service] = info
        elif isinstance(known, EndpointSliceInfo):
            self._by[info.service] = (known, info)
        else:
            self._by[info.service] = (*known, info)

    def _drop(self, info: EndpointSliceInfo) -> None:
        known = self._by.get(info.service) if info.service is not None else None
        if known is None:
            return
        left = () if known is info else tuple(i for i in _many(known) if i is not info)
        if not left:
            del self._by[info.service]  # type: ignore[arg-type]
        else:
            self._by[info.service] = left[0] if len(left) == 1 else left  # type: ignore[index]

    def __getitem__(self, key: ServiceKey) -> tuple[EndpointSliceInfo, ...]:
        return _many(self._by[key])

    def __iter__(self) -> Iterator[ServiceKey]:
        return iter(self._by)

    def __len__(self) -> int:
        return len(self._by)


def _many(
    known: EndpointSliceInfo | tuple[EndpointSliceInfo, ...],
) -> tuple[EndpointSliceInfo, ...]:
    return (known,) if isinstance(known, EndpointSliceInfo) else known
