"""The IP allocator: which Service holds which address. Pure, in memory; the controller owns it.

State is rebuilt at start-up by `restore` (what Services hold, in any order, never changed), then
kept by `allocate` / `release` / `update_config`. Each returns decisions; the caller writes them.
Side effects on *other* Services (a pending request satisfied because an address was freed) are
returned by `release` and `update_config`, and collected after `allocate` with `drain_woken()`.
Rules: alloc_choose (where addresses come from), alloc_pending (who gets a freed one),
alloc_config (which configs are refused), alloc_space (free space); costs: docs/performance.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import replace

from lbctl.core.alloc_choose import Choice, choose, families_of, holding_problem, keeps, plans
from lbctl.core.alloc_config import displaced_services, rejection
from lbctl.core.alloc_pending import Bucket, PendingQueue, ip_bucket, pool_bucket
from lbctl.core.alloc_pools import PoolTable
from lbctl.core.alloc_types import (
    AllocatorStats,
    Assignment,
    ConfigChange,
    Failure,
    Holding,
    Result,
    addr_key,
    akey_of,
)
from lbctl.core.model import (
    Config,
    Family,
    IPAddress,
    IPFamilyPolicy,
    PoolName,
    ServiceKey,
    ServiceRequest,
)
from lbctl.core.reasons import AllocFailure, AllocSuccess

__all__ = ["Allocator", "AllocatorStats", "Assignment", "ConfigChange", "Failure", "Result"]

_V4 = Family.V4
_SINGLE = IPFamilyPolicy.SINGLE_STACK


def _ip(fam: Family, n: int) -> IPAddress:
    return ipaddress.IPv4Address(n) if fam is _V4 else ipaddress.IPv6Address(n)


class Allocator:
    """Decides addresses for LoadBalancer Services from the pools of one Config."""

    def __init__(self, config: Config, *, lb_class: str | None = None) -> None:
        self._config = config
        self._table = PoolTable(config)
        self._lb_class = lb_class  # only Services with exactly this class (None: without one)
        self._held: dict[int, Holding] = {}
        self._by_sharing_key: dict[str, dict[int, Holding]] = {}
        self._assigned: dict[ServiceKey, Assignment] = {}
        self._requests: dict[ServiceKey, ServiceRequest] = {}  # of assigned Services
        self._pending = PendingQueue()
        self._woken: list[Assignment] = []
        self.stats = AllocatorStats()

    # --- queries ---------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    def assignment(self, key: ServiceKey) -> Assignment | None:
        return self._assigned.get(key)

    def assignments(self) -> list[Assignment]:
        return [self._assigned[k] for k in sorted(self._assigned)]

    def pending(self) -> list[Failure]:
        """Why each waiting Service waits, oldest first."""
        return self._pending.failures()

    def pending_requests(self) -> list[ServiceRequest]:
        """The waiting requests, oldest first (re-allocate them after a restore)."""
        return self._pending.in_order()

    def pending_failure(self, key: ServiceKey) -> Failure | None:
        return self._pending.failure(key)

    def usage(self, pool: str, family: Family) -> tuple[int, int]:
        """(addresses in use, usable size) of one pool and family; a shared address counts once."""
        slot = self._table.by_name.get(PoolName(pool))
        space = slot.spaces.get(family) if slot else None
        return (0, 0) if space is None else (space.used, space.size)

    def snapshot(self) -> dict[ServiceKey, tuple[ServiceRequest, tuple[IPAddress, ...]]]:
        """What each assigned Service holds: feeding it to `restore` rebuilds this state."""
        return {k: (self._requests[k], self._assigned[k].ips) for k in sorted(self._assigned)}

    def holders(self, ip: IPAddress) -> tuple[ServiceKey, ...]:
        h = self._held.get(addr_key(ip))
        return () if h is None else tuple(sorted(h.holders))

    def anomalies(self) -> list[Failure]:
        """Restored states that break the rules: addresses in no pool, incompatible sharers."""
        found: list[Failure] = []
        for akey in sorted(self._held):
            h = self._held[akey]
            for key in sorted(h.holders):
                if h.pool is None:
                    why = f"{h.ip} is in no pool of the config in force; kept, given to no one"
                    found.append(Failure(key, AllocFailure.CONFIG_INVALID, why))
                problem = holding_problem(h, h.holders[key])
                if problem is not None:
                    found.append(Failure(key, AllocFailure.SHARING_CONFLICT, problem[1]))
        return found

    def drain_woken(self) -> list[Assignment]:
        """Assignments made for pending requests since the last drain (oldest first)."""
        woken, self._woken = self._woken, []
        return woken

    # --- commands ----------------------------------------------------------------------------

    def allocate(self, req: ServiceRequest) -> Result:
        """Addresses for req: unchanged requests keep theirs; failures wait as pending."""
        key = req.key
        if req.lb_class != self._lb_class:
            if key in self._assigned:
                self._wake(self._drop(key))
            self._pending.remove(key)
            why = f"loadBalancerClass {req.lb_class!r} is not handled (ours: {self._lb_class!r})"
            return Failure(key, AllocFailure.CLASS_MISMATCH, why)
        cur = self._assigned.get(key)
        if cur is None:
            self._pending.remove(key)
            return self._fresh(req)
        old = self._requests[key]
        if old is req or old == req:
            return cur
        if keeps(req, cur, self._table, self._held):
            self._wake(self._rebind(req))
            return self._assigned[key]
        touched = self._drop(key)
        result = self._fresh(req)
        self._wake(touched)
        return result

    def release(self, key: ServiceKey) -> list[Assignment]:
        """Forget a Service; returns assignments made for pending requests that take its IPs."""
        self._pending.remove(key)
        if key in self._assigned:
            self._wake(self._drop(key))
        return self.drain_woken()

    def restore(self, req: ServiceRequest, ips: Sequence[IPAddress]) -> Assignment:
        """Record what a Service already holds (ours or MetalLB's), exactly, whatever the rules.

        Any order of restores gives the same state. An address in no pool is kept as held (given
        to no one else) and listed in Assignment.orphaned; see also `anomalies()`.
        """
        if not ips:
            raise ValueError(f"restore of {req.key}: no addresses given")
        key = req.key
        touched = self._drop(key) if key in self._assigned else []
        self._pending.remove(key)
        ordered = list(dict.fromkeys(ips))  # as the Service lists them: never reordered
        holdings = [self._hold(req, ip) for ip in ordered]
        pool = next((h.pool for h in holdings if h.pool is not None), None)
        orphaned = tuple(h.ip for h in holdings if h.pool is None)
        found = Assignment(key, tuple(ordered), pool, AllocSuccess.RESTORED, orphaned)
        self._assigned[key] = found
        self._requests[key] = req
        self._wake(touched)
        return found

    def update_config(self, config: Config) -> ConfigChange:
        """Adopt a new config, or reject it if it would move an assigned IP (see ConfigChange)."""
        table = PoolTable(config)
        displaced = displaced_services(self._held, table)
        if displaced and not config.allow_renumber:
            return rejection(displaced)
        self._config, self._table = config, table
        for h in self._held.values():
            slot = table.pool_of(h.family, h.n)
            h.pool = None if slot is None else slot.name
            if slot is not None:
                slot.spaces[h.family].take(h.n)
        repooled = self._repool()
        renumbered = self._renumber() if config.allow_renumber else []
        for req in self._pending.in_order():
            self.stats.retried_on_config += 1
            self._pending.remove(req.key)
            result = self._fresh(req)
            if isinstance(result, Assignment):
                self._woken.append(result)
        return ConfigChange(
            accepted=True,
            renumbered=tuple(renumbered),
            repooled=tuple(repooled),
            woken=tuple(self.drain_woken()),
        )

    # --- internals -------------------------------------------------------------------------

    def _fresh(self, req: ServiceRequest) -> Result:
        """Allocate for a request that holds nothing; a failure becomes pending."""
        simple = req.pool is None and not req.requested_ips and not req.sharing_key
        if simple and req.family_policy is _SINGLE:
            # Hot path: the first candidate pool with a free address of the family.
            fam = req.families[0] if req.families else _V4
            for slot in self._table.candidates(req).auto:
                space = slot.spaces.get(fam)
                if space is not None:
                    n = space.take_lowest()
                    if n is not None:
                        return self._commit(req, slot.name, ((fam, n),), fresh=True)
        choice = choose(req, self._table, self._held, self._by_sharing_key)
        if isinstance(choice, Failure):
            self._pending.add(req, choice, self._buckets(req))
            return choice
        return self._take(req, choice)

    def _take(self, req: ServiceRequest, choice: Choice) -> Assignment:
        for fam, n in choice.picks:
            if akey_of(fam, n) not in self._held:
                choice.slot.spaces[fam].take(n)
        return self._commit(req, choice.slot.name, choice.picks, fresh=False)

    def _commit(
        self,
        req: ServiceRequest,
        pool: PoolName,
        picks: tuple[tuple[Family, int], ...],
        *,
        fresh: bool,
    ) -> Assignment:
        """Record req as holder of picks (already marked used in the free space)."""
        ips: list[IPAddress] = []
        for fam, n in picks:
            ip = _ip(fam, n)
            akey = akey_of(fam, n)
            h = None if fresh else self._held.get(akey)
            if h is None:
                h = self._held[akey] = Holding(ip, n, fam, pool)
            self._add_holder(h, req)
            ips.append(ip)
        found = Assignment(req.key, tuple(ips), pool)
        self._assigned[req.key] = found
        self._requests[req.key] = req
        return found

    def _hold(self, req: ServiceRequest, ip: IPAddress) -> Holding:
        """Add req as a holder of ip, marking it used in its pool (restore)."""
        akey = addr_key(ip)
        h = self._held.get(akey)
        if h is None:
            fam, n = Family(ip.version), int(ip)
            slot = self._table.pool_of(fam, n)
            h = self._held[akey] = Holding(ip, n, fam, None if slot is None else slot.name)
            if slot is not None:
                slot.spaces[fam].take(n)
        self._add_holder(h, req)
        return h

    def _add_holder(self, h: Holding, req: ServiceRequest) -> None:
        h.holders[req.key] = req
        if req.sharing_key:
            self._by_sharing_key.setdefault(req.sharing_key, {})[h.akey] = h

    def _remove_holder(self, h: Holding, key: ServiceKey) -> None:
        old = h.holders.pop(key)
        skey = old.sharing_key
        if skey and not any(o.sharing_key == skey for o in h.holders.values()):
            index = self._by_sharing_key[skey]
            del index[h.akey]
            if not index:
                del self._by_sharing_key[skey]

    def _drop(self, key: ServiceKey) -> list[Holding]:
        """Remove an assigned Service from its addresses; returns the holdings it left."""
        found = self._assigned.pop(key)
        del self._requests[key]
        touched: list[Holding] = []
        for ip in found.ips:
            h = self._held[addr_key(ip)]
            self._remove_holder(h, key)
            if not h.holders:
                del self._held[h.akey]
                if h.pool is not None:
                    self._table.by_name[h.pool].spaces[h.family].give(h.n)
            touched.append(h)
        return touched

    def _rebind(self, req: ServiceRequest) -> list[Holding]:
        """Swap in a changed request that keeps its addresses; returns its holdings."""
        touched = [self._held[addr_key(ip)] for ip in self._assigned[req.key].ips]
        for h in touched:
            self._remove_holder(h, req.key)
            self._add_holder(h, req)
        self._requests[req.key] = req
        cur = self._assigned[req.key]
        primary = families_of(req)[0]
        ordered = tuple(sorted(cur.ips, key=lambda ip: ip.version != primary))
        if ordered != cur.ips:  # the primary family changed: it is listed first
            self._assigned[req.key] = replace(cur, ips=ordered)
        return touched

    def _buckets(self, req: ServiceRequest) -> list[Bucket]:
        """Where a pending request waits: the addresses it asked for, or its pools x families."""
        if req.requested_ips:
            return [ip_bucket(addr_key(ip)) for ip in req.requested_ips]
        if req.pool is not None and req.pool not in self._table.by_name:
            return []
        found: list[Bucket] = []
        for plan in plans(req):
            for slot in self._table.candidates(req).auto:
                if all(f in slot.spaces for f in plan):
                    found.extend(pool_bucket(slot.name, f) for f in plan)
        return found

    def _wake(self, touched: Iterable[Holding]) -> None:
        """Offer freed (or newly shareable) addresses to pending requests that could use them."""
        touched = list(touched)
        if not touched or not len(self._pending):
            return
        buckets: list[Bucket] = [ip_bucket(h.akey) for h in touched]
        buckets += [pool_bucket(h.pool, h.family) for h in touched if h.pool is not None]
        for req in self._pending.waiting_on(buckets):
            if not any(self._open_to(h, req) for h in touched):
                if not any(self._open_to(h, None) for h in touched):
                    break  # every address went to someone who will not share it
                continue
            self.stats.reexamined += 1
            self._pending.remove(req.key)
            result = self._fresh(req)
            if isinstance(result, Assignment):
                self._woken.append(result)

    def _open_to(self, h: Holding, req: ServiceRequest | None) -> bool:
        """Whether h's address is free, or held by sharers req (any sharer if None) might join."""
        cur = self._held.get(h.akey)
        if cur is None:
            slot = self._table.by_name.get(h.pool) if h.pool is not None else None
            return slot is not None and slot.spaces[h.family].is_free(h.n)
        if req is None:
            return any(o.sharing_key for o in cur.holders.values())
        return cur.shareable_by(req)

    def _repool(self) -> list[Assignment]:
        """Refresh each assignment's pool after a config change; returns the changed ones."""
        changed: list[Assignment] = []
        for key in sorted(self._assigned):
            cur = self._assigned[key]
            holdings = [self._held[addr_key(ip)] for ip in cur.ips]
            pool = next((h.pool for h in holdings if h.pool is not None), None)
            orphaned = tuple(h.ip for h in holdings if h.pool is None)
            if (pool, orphaned) != (cur.pool, cur.orphaned):
                self._assigned[key] = Assignment(key, cur.ips, pool, cur.reason, orphaned)
                if pool is not None and cur.pool is not None:
                    changed.append(self._assigned[key])
        return changed

    def _renumber(self) -> list[Result]:
        """With allow_renumber: move every Service holding an address in no pool, oldest first."""
        victims = [
            self._requests[k] for k, a in self._assigned.items() if a.orphaned or a.pool is None
        ]
        victims.sort(key=lambda r: (r.created, r.key))
        for req in victims:
            self._drop(req.key)
        results: list[Result] = []
        for req in victims:
            result = self._fresh(req)
            if isinstance(result, Assignment):
                result = Assignment(result.key, result.ips, result.pool, AllocSuccess.RENUMBERED)
                self._assigned[req.key] = result
            results.append(result)
        return results
