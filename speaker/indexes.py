"""The speaker's index of EndpointSlices by Service, kept as slices come and go, so a plan reads
a Service's slices without regrouping every slice (the planners take it as their `slices`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from lbctl.core.adapt import EndpointSliceInfo
from lbctl.core.model import ServiceKey

Slot = tuple[str, str]  # (namespace, name) of an EndpointSlice


class SlicesByService(Mapping[ServiceKey, tuple[EndpointSliceInfo, ...]]):
    """ServiceKey -> its EndpointSlices (in no particular order)."""

    def __init__(self) -> None:
        self._by: dict[ServiceKey, dict[Slot, EndpointSliceInfo]] = {}

    def add(self, slot: Slot, info: EndpointSliceInfo) -> None:
        if info.service is not None:
            self._by.setdefault(info.service, {})[slot] = info

    def remove(self, slot: Slot, service: ServiceKey | None) -> None:
        slices = self._by.get(service) if service is not None else None
        if slices is not None:
            slices.pop(slot, None)
            if not slices:
                del self._by[service]  # type: ignore[arg-type]

    def __getitem__(self, key: ServiceKey) -> tuple[EndpointSliceInfo, ...]:
        return tuple(self._by[key].values())

    def __iter__(self) -> Iterator[ServiceKey]:
        return iter(self._by)

    def __len__(self) -> int:
        return len(self._by)
