"""The pools of one config as lbctl.core.allocator sees them: order, scopes and free space.

Order (deterministic, unlike MetalLB's random map order): pools with an allocation scope by
priority (lower first), ties by name; then the others by name.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from lbctl.core.alloc_space import FreeSpace
from lbctl.core.model import (
    Config,
    Family,
    Pool,
    PoolName,
    ServiceRequest,
    any_selector_matches,
)

# Distinct (pool, namespace, labels) combinations cached per config; cleared past this size so a
# churn of uniquely-labelled Services cannot grow memory without bound.
_CACHE_LIMIT = 4096


class PoolSlot:
    """One pool of the config in force, with a free-space index per family it has."""

    __slots__ = ("name", "pool", "rank", "spaces")

    def __init__(self, pool: Pool, rank: int) -> None:
        self.name: PoolName = pool.name
        self.pool = pool
        self.rank = rank  # position in the allocation order
        self.spaces: dict[Family, FreeSpace] = {}
        avoid = pool.avoid_buggy_ips
        for fam in (Family.V4, Family.V6):
            spans = [(int(r.first), int(r.last)) for r in pool.ranges if r.family is fam]
            if spans:
                self.spaces[fam] = FreeSpace(spans, avoid and fam is Family.V4)

    def usage_text(self, fam: Family) -> str:
        space = self.spaces[fam]
        suffix = "" if len(self.spaces) == 1 else f" {fam.k8s}"
        return f"{space.used}/{space.size}{suffix} used"


@dataclass(frozen=True, slots=True)
class Candidates:
    """The pools one request may use: `usable` for requested IPs, `auto` for auto-assignment."""

    usable: tuple[PoolSlot, ...]
    auto: tuple[PoolSlot, ...]
    why_none: str  # why `auto` is empty, when it is


def scope_admits(pool: Pool, req: ServiceRequest) -> bool:
    """MetalLB's serviceAllocation: each non-empty criterion must hold (entries within are OR)."""
    scope = pool.scope
    if scope is None:
        return True
    if scope.namespaces and req.namespace not in scope.namespaces:
        return False
    if scope.namespace_selectors and not any_selector_matches(
        scope.namespace_selectors, dict(req.namespace_labels)
    ):
        return False
    return not scope.service_selectors or any_selector_matches(
        scope.service_selectors, dict(req.labels)
    )


def pool_order(config: Config) -> list[Pool]:
    scoped = sorted(
        (p for p in config.pools if p.scope),
        key=lambda p: (p.scope.priority if p.scope else 0, p.name),
    )
    rest = sorted((p for p in config.pools if not p.scope), key=lambda p: p.name)
    return scoped + rest


class PoolTable:
    """Pools in allocation order, an address -> pool index, and a per-request candidates cache."""

    def __init__(self, config: Config) -> None:
        self.slots = tuple(PoolSlot(p, i) for i, p in enumerate(pool_order(config)))
        self.by_name = {s.name: s for s in self.slots}
        self._cache: dict[tuple[object, ...], Candidates] = {}
        spans: dict[Family, list[tuple[int, int, PoolSlot]]] = {Family.V4: [], Family.V6: []}
        for slot in self.slots:
            for r in slot.pool.ranges:
                spans[r.family].append((int(r.first), int(r.last), slot))
        self._index: dict[Family, tuple[list[int], list[int], list[PoolSlot]]] = {}
        for fam, lst in spans.items():
            lst.sort(key=lambda t: (t[0], t[2].rank))
            self._index[fam] = (
                [a for a, _, _ in lst],
                [b for _, b, _ in lst],
                [s for *_, s in lst],
            )

    def pool_of(self, fam: Family, n: int) -> PoolSlot | None:
        """The pool holding address n of family fam (buggy addresses excluded where avoided)."""
        starts, ends, slots = self._index[fam]
        i = bisect_right(starts, n) - 1
        if i < 0 or n > ends[i]:
            return None
        slot = slots[i]
        return slot if slot.spaces[fam].contains(n) else None

    def candidates(self, req: ServiceRequest) -> Candidates:
        ck = (req.pool, req.namespace, req.labels, req.namespace_labels)
        found = self._cache.get(ck)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[ck] = self._compute(req)
        return found

    def _compute(self, req: ServiceRequest) -> Candidates:
        if req.pool is not None:
            slot = self.by_name.get(req.pool)
            if slot is None:
                return Candidates((), (), f"pool {req.pool} does not exist")
            if not scope_admits(slot.pool, req):
                why = f"pool {req.pool}'s allocation scope does not admit this Service"
                return Candidates((), (), why)
            return Candidates((slot,), (slot,), "")
        usable = tuple(s for s in self.slots if scope_admits(s.pool, req))
        auto = tuple(s for s in usable if s.pool.auto_assign)
        if auto:
            why = ""
        elif usable:
            why = "the pools admitting this Service do not auto-assign"
        elif self.slots:
            why = "no pool's allocation scope admits this Service"
        else:
            why = "no pool is configured"
        return Candidates(usable, auto, why)
