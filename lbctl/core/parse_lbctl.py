"""Reads lbctl's own config format (docs/configuration.md) into a Config; called by parse.py.

`parse_lbctl(doc)` takes an already-loaded YAML tree and returns the Config with its warnings, or
raises ConfigError carrying every error found (never another exception). Pools and the document
live here; advertisements, peers and the checks across objects in the parse_lbctl_* modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbctl.core.model import (
    AddressRange,
    AllocationScope,
    Config,
    ConfigFormat,
    ParsedConfig,
    Pool,
    PoolName,
)
from lbctl.core.parse_common import Issues, Tree, at, quote
from lbctl.core.parse_lbctl_adv import Refs, read_bgp_advertisements, read_l2_advertisements
from lbctl.core.parse_lbctl_checks import check_document
from lbctl.core.parse_lbctl_peers import read_peers
from lbctl.core.parse_lbctl_rules import (
    ALLOCATION_KEYS,
    API_VERSION,
    KIND,
    POOL_KEYS,
    TOP_KEYS,
    check_text,
    read_name,
    reject_unknown,
)

__all__ = ["API_VERSION", "is_lbctl_document", "parse_lbctl"]


def is_lbctl_document(doc: object) -> bool:
    """The format rule: a bare document is lbctl's iff it says `apiVersion: lbctl.io/v1alpha1`."""
    return isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION


def parse_lbctl(doc: object, where: str = "") -> ParsedConfig:
    """lbctl's format -> Config; ConfigError with every error (prefixed by `where`) if invalid."""
    issues = Issues(where)
    root = issues.mapping(doc, "")
    if root is None:
        return issues.finish(Config())
    _header(issues, root)
    reject_unknown(issues, root, TOP_KEYS, "")
    allow_renumber = issues.get_bool(root, "allowRenumber", "")
    aliases = issues.community_aliases(root, "communities", "")
    refs = Refs(alias_names=_alias_names(root))
    pools = read_pools(issues, root)
    l2 = read_l2_advertisements(issues, root, refs)
    bgp = read_bgp_advertisements(issues, root, aliases, refs)
    peers = read_peers(issues, root)
    check_document(issues, pools=pools, l2=l2, bgp=bgp, peers=peers, refs=refs)
    config = Config(
        pools=tuple(p for _, p in pools.pools),
        l2_advertisements=tuple(a for _, a in l2),
        bgp_advertisements=tuple(a for _, a in bgp),
        peers=tuple(p for _, p in peers.peers),
        allow_renumber=bool(allow_renumber),
        source_format=ConfigFormat.LBCTL,
    )
    return issues.finish(config)


def _header(issues: Issues, root: Tree) -> None:
    version = issues.get_str(root, "apiVersion", "", required=True)
    if version is not None and version != API_VERSION:
        issues.error("apiVersion", f"{quote(version)}: must be {quote(API_VERSION)}")
    kind = issues.get_str(root, "kind", "")
    if kind is not None and kind != KIND:
        issues.error("kind", f"{quote(kind)}: must be {quote(KIND)}")


def _alias_names(root: Tree) -> frozenset[str]:
    """Every alias written, valid or not: a bad alias is reported once, not at each use."""
    m = root.get("communities")
    return frozenset(k for k in m if isinstance(k, str)) if isinstance(m, dict) else frozenset()


@dataclass
class PoolsRead:
    """The pools that parsed, plus what the checks across objects need of every pool entry."""

    pools: list[tuple[str, Pool]] = field(default_factory=list)  # (where, pool)
    names: list[tuple[str, str]] = field(default_factory=list)  # (where of the name, name)
    ranges: list[tuple[str, AddressRange]] = field(default_factory=list)  # (where, range)


def read_pools(issues: Issues, root: Tree) -> PoolsRead:
    out = PoolsRead()
    for pos, entry in issues.entries(root, "pools", ""):
        errors = len(issues.errors)
        name, where = read_name(issues, entry, pos, "pool")
        if name is not None:
            out.names.append((at(pos, "name"), name))
        reject_unknown(issues, entry, POOL_KEYS, where)
        ranges = _addresses(issues, entry, where)
        out.ranges.extend(ranges)
        auto_assign = issues.get_bool(entry, "autoAssign", where)
        avoid_buggy = issues.get_bool(entry, "avoidBuggyIPs", where)
        scope = _scope(issues, entry, where)
        if name is None or len(issues.errors) > errors:
            continue
        pool = Pool(
            name=PoolName(name),
            ranges=tuple(r for _, r in ranges),
            auto_assign=True if auto_assign is None else auto_assign,
            avoid_buggy_ips=bool(avoid_buggy),
            scope=scope,
        )
        out.pools.append((where, pool))
    return out


def _addresses(issues: Issues, entry: Tree, where: str) -> list[tuple[str, AddressRange]]:
    items = issues.get_list(entry, "addresses", where, required=True, nonempty=True) or []
    out: list[tuple[str, AddressRange]] = []
    for i, item in enumerate(items):
        w = at(at(where, "addresses"), i)
        r = issues.address_range(item, w)
        if r is not None:
            out.append((w, r))
    return out


def _scope(issues: Issues, entry: Tree, where: str) -> AllocationScope | None:
    """serviceAllocation; an empty one is the same as none (the pool serves every Service)."""
    m = issues.get_map(entry, "serviceAllocation", where)
    if not m:
        return None
    w = at(where, "serviceAllocation")
    reject_unknown(issues, m, ALLOCATION_KEYS, w)
    priority = issues.get_int(m, "priority", w)
    namespaces = issues.get_str_list(m, "namespaces", w) or ()
    for i, namespace in enumerate(namespaces):
        check_text(issues, namespace, at(at(w, "namespaces"), i), "namespace name")
    return AllocationScope(
        priority=priority or 0,
        namespaces=namespaces,
        namespace_selectors=issues.selectors(m, "namespaceSelectors", w),
        service_selectors=issues.selectors(m, "serviceSelectors", w),
    )
