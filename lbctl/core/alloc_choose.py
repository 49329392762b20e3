"""Choosing addresses for one request, without changing anything: lbctl.core.allocator commits.

Rules (MetalLB's, made deterministic): requested IPs must lie in one pool the Service may use (the
named pool, if any), be of a family it has, and be free or shareable; otherwise auto-assign from
the candidate pools in order, lowest free address first, preferring an address already shared by
compatible Services with the same sharing key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lbctl.core.alloc_pools import Candidates, PoolSlot, PoolTable
from lbctl.core.alloc_types import Assignment, Failure, Holding, addr_key
from lbctl.core.model import Family, IPAddress, IPFamilyPolicy, ServiceRequest
from lbctl.core.reasons import AllocFailure


@dataclass(frozen=True, slots=True)
class Choice:
    """Addresses to take, primary family first; an address already held is joined (shared)."""

    slot: PoolSlot
    picks: tuple[tuple[Family, int], ...]


def families_of(req: ServiceRequest) -> tuple[Family, Family]:
    """(primary, secondary): secondary is the other family when ipFamilies names only one."""
    fams = req.families or (Family.V4,)
    primary = fams[0]
    other = Family.V6 if primary is Family.V4 else Family.V4
    return primary, next((f for f in fams[1:] if f is not primary), other)


def plans(req: ServiceRequest) -> tuple[tuple[Family, ...], ...]:
    """The family combinations to try, best first."""
    primary, secondary = families_of(req)
    if req.family_policy is IPFamilyPolicy.SINGLE_STACK:
        return ((primary,),)
    if req.family_policy is IPFamilyPolicy.REQUIRE_DUAL_STACK:
        return ((primary, secondary),)
    return ((primary, secondary), (primary,))


def allowed_families(req: ServiceRequest) -> frozenset[Family]:
    primary, secondary = families_of(req)
    if req.family_policy is IPFamilyPolicy.SINGLE_STACK:
        return frozenset((primary,))
    return frozenset((primary, secondary))


def sharing_problem(req: ServiceRequest, other: ServiceRequest) -> str | None:
    """Why two Services with sharing keys may not share an address, or None if they may."""
    if req.sharing_key != other.sharing_key:
        return f"sharing key {other.sharing_key!r} differs from {req.sharing_key!r}"
    clash = sorted(set(req.ports) & set(other.ports))
    if clash:
        ports = ", ".join(f"{p.protocol}/{p.port}" for p in clash)
        return f"port {ports} used by both"
    if req.backend_key != other.backend_key:
        return "backends differ (externalTrafficPolicy Local needs the same selector)"
    return None


def holding_problem(h: Holding, req: ServiceRequest) -> tuple[AllocFailure, str] | None:
    """Why req may not join the holders of h (checked against each one), or None."""
    for key in sorted(h.holders):
        if key == req.key:
            continue
        other = h.holders[key]
        if not req.sharing_key or not other.sharing_key:
            return AllocFailure.REQUESTED_IP_UNAVAILABLE, f"{h.ip} is in use by {key}"
        why = sharing_problem(req, other)
        if why is not None:
            return AllocFailure.SHARING_CONFLICT, f"{h.ip} is shared by {key}: {why}"
    return None


def choose(
    req: ServiceRequest,
    table: PoolTable,
    held: Mapping[int, Holding],
    by_sharing_key: Mapping[str, dict[int, Holding]],
) -> Choice | Failure:
    """Where req's addresses would come from now (req must hold nothing)."""
    if req.pool is not None and req.pool not in table.by_name:
        return Failure(req.key, AllocFailure.UNKNOWN_POOL, f"pool {req.pool} does not exist")
    cands = table.candidates(req)
    if req.requested_ips:
        return _choose_requested(req, table, cands, held)
    if not cands.auto:
        return Failure(req.key, AllocFailure.NO_POOL_MATCHES, cands.why_none)
    shared = by_sharing_key.get(req.sharing_key) if req.sharing_key else None
    considered: list[tuple[PoolSlot, tuple[Family, ...]]] = []
    for plan in plans(req):
        options: list[tuple[bool, int, Choice]] = []
        for slot in cands.auto:
            if not all(f in slot.spaces for f in plan):
                continue
            considered.append((slot, plan))
            picks = [_pick(slot, f, req, shared) for f in plan]
            if all(p is not None for p in picks):
                found = tuple((f, p[0]) for f, p in zip(plan, picks, strict=True) if p)
                is_shared = any(p[1] for p in picks if p)
                options.append((not is_shared, slot.rank, Choice(slot, found)))
                if not shared:
                    break  # no sharing preference: the first pool in order wins
        if options:
            return min(options, key=lambda o: (o[0], o[1]))[2]
    return _exhausted(req, cands, considered)


def _pick(
    slot: PoolSlot, fam: Family, req: ServiceRequest, shared: dict[int, Holding] | None
) -> tuple[int, bool] | None:
    """(address, already shared) for one family from one pool, or None."""
    if shared:
        best = None
        for h in shared.values():
            if h.pool == slot.name and h.family is fam and holding_problem(h, req) is None:
                best = h.n if best is None else min(best, h.n)
        if best is not None:
            return best, True
    n = slot.spaces[fam].lowest()
    return None if n is None else (n, False)


def _exhausted(
    req: ServiceRequest, cands: Candidates, considered: list[tuple[PoolSlot, tuple[Family, ...]]]
) -> Failure:
    primary, secondary = families_of(req)
    if not considered:
        if req.family_policy is IPFamilyPolicy.REQUIRE_DUAL_STACK:
            why = f"no pool this Service may use holds both {primary.k8s} and {secondary.k8s}"
            return Failure(req.key, AllocFailure.FAMILY_UNAVAILABLE, why)
        why = f"no pool this Service may use has {primary.k8s} addresses"
        return Failure(req.key, AllocFailure.NO_POOL_MATCHES, why)
    parts: list[str] = []
    for slot, plan in considered:
        for fam in plan:
            space = slot.spaces[fam]
            text = f"pool {slot.name} is full: {slot.usage_text(fam)}"
            if space.lowest() is None and text not in parts:
                parts.append(text)
    msg = "; ".join(parts)
    if req.sharing_key:
        msg += f" (no address with sharing key {req.sharing_key!r} is compatible)"
    return Failure(req.key, AllocFailure.POOL_EXHAUSTED, msg)


def _choose_requested(
    req: ServiceRequest, table: PoolTable, cands: Candidates, held: Mapping[int, Holding]
) -> Choice | Failure:
    ips = tuple(dict.fromkeys(req.requested_ips))
    allowed = allowed_families(req)
    by_family: dict[Family, IPAddress] = {}
    for ip in ips:
        fam = Family(ip.version)
        if fam not in allowed:
            have = " and ".join(f.k8s for f in sorted(allowed))
            why = f"{ip} is {fam.k8s}; the Service has {have} only"
            return Failure(req.key, AllocFailure.REQUESTED_IP_UNAVAILABLE, why)
        if fam in by_family:
            why = f"two {fam.k8s} addresses requested: {by_family[fam]}, {ip}"
            return Failure(req.key, AllocFailure.INVALID_ANNOTATION, why)
        by_family[fam] = ip
    if req.family_policy is IPFamilyPolicy.REQUIRE_DUAL_STACK and len(by_family) < 2:
        only = next(iter(by_family)).k8s
        why = f"RequireDualStack needs an IPv4 and an IPv6 address; only {only} requested"
        return Failure(req.key, AllocFailure.FAMILY_UNAVAILABLE, why)
    slots: list[PoolSlot] = []
    for fam, ip in by_family.items():
        problem = _requested_problem(req, table, cands, held, fam=fam, ip=ip)
        if isinstance(problem, Failure):
            return problem
        slots.append(problem)
    if len({s.name for s in slots}) > 1:
        names = ", ".join(s.name for s in slots)
        why = f"{', '.join(map(str, by_family.values()))} lie in different pools ({names})"
        return Failure(req.key, AllocFailure.REQUESTED_IP_UNAVAILABLE, why)
    primary = families_of(req)[0]
    order = sorted(by_family, key=lambda f: f is not primary)
    return Choice(slots[0], tuple((f, int(by_family[f])) for f in order))


def _requested_problem(
    req: ServiceRequest,
    table: PoolTable,
    cands: Candidates,
    held: Mapping[int, Holding],
    *,
    fam: Family,
    ip: IPAddress,
) -> PoolSlot | Failure:
    """The pool a requested address comes from, or why it cannot be had."""
    unavailable = AllocFailure.REQUESTED_IP_UNAVAILABLE
    slot = table.pool_of(fam, int(ip))
    if slot is None:
        return Failure(req.key, unavailable, f"{ip} is in no pool")
    if req.pool is not None and slot.name != req.pool:
        return Failure(req.key, unavailable, f"{ip} is in pool {slot.name}, not in pool {req.pool}")
    if slot not in cands.usable:
        why = f"{ip} is in pool {slot.name}, whose allocation scope does not admit this Service"
        return Failure(req.key, unavailable, why)
    h = held.get(addr_key(ip))
    if h is not None:
        problem = holding_problem(h, req)
        if problem is not None:
            return Failure(req.key, problem[0], problem[1])
    return slot


def keeps(
    req: ServiceRequest, cur: Assignment, table: PoolTable, held: Mapping[int, Holding]
) -> bool:
    """Whether a changed request may keep the addresses it holds."""
    if cur.pool is None or cur.orphaned:
        return False
    fams = [Family(ip.version) for ip in cur.ips]
    allowed = allowed_families(req)
    if len(set(fams)) != len(fams) or any(f not in allowed for f in fams):
        return False
    if families_of(req)[0] not in fams:
        return False
    if req.family_policy is IPFamilyPolicy.REQUIRE_DUAL_STACK and len(fams) < 2:
        return False
    if req.pool is not None and req.pool != cur.pool:
        return False
    if any(held[addr_key(ip)].pool != cur.pool for ip in cur.ips):
        return False  # split over two pools by a config change: re-place it
    cands = table.candidates(req)
    if req.requested_ips:
        if set(req.requested_ips) != set(cur.ips):
            return False
        allowed_slots = cands.usable
    else:
        allowed_slots = cands.auto
    if cur.pool not in {s.name for s in allowed_slots}:
        return False
    return all(holding_problem(held[addr_key(ip)], req) is None for ip in cur.ips)
