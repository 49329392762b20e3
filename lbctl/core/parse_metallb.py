"""MetalLB's legacy ConfigMap format (<= 0.12), read strictly into the model; called by parse.py.

Every key and rule of ../shared/reference/metallb-compat.md. A `layer2` pool becomes a Pool plus an
L2Advertisement for it; a `bgp` pool a Pool plus its BGPAdvertisements (one default one when none
is written). Peers are named by their address. bfd-profiles are validated, kept and warned about.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import replace

from lbctl.core.model import (
    AddressRange,
    BGPAdvertisement,
    Community,
    Config,
    ConfigFormat,
    Family,
    L2Advertisement,
    ParsedConfig,
    Pool,
    PoolName,
)
from lbctl.core.parse_common import (
    UINT32_MAX,
    Issues,
    Tree,
    at,
    object_where,
    quote,
)
from lbctl.core.parse_metallb_peers import parse_bfd_profiles, parse_peers

TOP_KEYS = ("peers", "bgp-communities", "address-pools", "bfd-profiles")
POOL_KEYS = (
    "name",
    "protocol",
    "addresses",
    "auto-assign",
    "avoid-buggy-ips",
    "bgp-advertisements",
)
ADVERTISEMENT_KEYS = ("aggregation-length", "aggregation-length-v6", "localpref", "communities")
PROTOCOLS = ("layer2", "bgp")


def parse_metallb(doc: object, where: str = "") -> ParsedConfig:
    """A MetalLB legacy config (the `config` key of its ConfigMap, loaded) -> ParsedConfig."""
    issues = Issues(where)
    top = issues.mapping(doc, "")
    if top is None:
        return issues.finish(Config(source_format=ConfigFormat.METALLB))
    issues.reject_unknown(top, TOP_KEYS, "")
    aliases = issues.community_aliases(top, "bgp-communities", "", allow_large=False)
    bfd_profiles, bfd_names = parse_bfd_profiles(issues, top)
    pools = _PoolsReader(issues, aliases)
    pools.read(top)
    peers = parse_peers(issues, top, bfd_names)
    if not peers:
        for pool in pools.pools:
            if any(adv.pools == (pool.name,) for adv in pools.bgp):
                issues.warn(
                    f"pool {quote(pool.name)}: protocol",
                    '"bgp" but no peers are configured: its addresses will not be announced',
                )
    config = Config(
        pools=tuple(pools.pools),
        l2_advertisements=tuple(pools.l2),
        bgp_advertisements=tuple(pools.bgp),
        peers=peers,
        bfd_profiles=bfd_profiles,
        source_format=ConfigFormat.METALLB,
    )
    return issues.finish(config)


class _PoolsReader:
    """Reads address-pools[] into pools and their advertisements, then checks names and overlaps."""

    def __init__(self, issues: Issues, aliases: Mapping[str, Community]) -> None:
        self.issues = issues
        self.aliases = aliases
        self.pools: list[Pool] = []
        self.l2: list[L2Advertisement] = []
        self.bgp: list[BGPAdvertisement] = []
        self.names: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, AddressRange]] = []

    def read(self, top: Tree) -> None:
        for index_where, entry in self.issues.entries(top, "address-pools", ""):
            self.pool(entry, index_where)
        self.issues.check_unique(self.names, "pool name")
        self.issues.check_overlaps(self.ranges)

    def pool(self, m: Tree, index_where: str) -> None:
        issues = self.issues
        where = object_where("pool", m.get("name"), index_where)
        issues.reject_unknown(m, POOL_KEYS, where)
        name = issues.get_name(m, "name", where)
        protocol = issues.get_str(m, "protocol", where, required=True)
        if protocol is not None and protocol not in PROTOCOLS:
            issues.error(at(where, "protocol"), f'{quote(protocol)}: must be "layer2" or "bgp"')
            protocol = None
        ranges = self.addresses(m, where)
        auto_assign = issues.get_bool(m, "auto-assign", where)
        avoid_buggy = issues.get_bool(m, "avoid-buggy-ips", where)
        ads = issues.entries(m, "bgp-advertisements", where)
        if protocol == "layer2" and ads:
            issues.error(
                at(where, "bgp-advertisements"), 'only allowed on a pool with protocol "bgp"'
            )
        bgp = (
            self.bgp_advertisements(PoolName(name or ""), ads, ranges) if protocol == "bgp" else []
        )
        if name is None:
            return
        self.names.append((at(index_where, "name"), name))
        pool_name = PoolName(name)
        self.pools.append(
            Pool(
                name=pool_name,
                ranges=tuple(r for _, r in ranges),
                auto_assign=True if auto_assign is None else auto_assign,
                avoid_buggy_ips=bool(avoid_buggy),
            )
        )
        if protocol == "layer2":
            self.l2.append(L2Advertisement(name=name, pools=(pool_name,)))
        self.bgp.extend(bgp)

    def addresses(self, m: Tree, where: str) -> list[tuple[str, AddressRange]]:
        """addresses[] as (where, range); every entry is also queued for the overlap check."""
        items = self.issues.get_list(m, "addresses", where, required=True, nonempty=True) or []
        out: list[tuple[str, AddressRange]] = []
        for i, item in enumerate(items):
            entry_where = at(at(where, "addresses"), i)
            r = self.issues.address_range(item, entry_where)
            if r is not None:
                out.append((entry_where, r))
        self.ranges.extend(out)
        return out

    def bgp_advertisements(
        self,
        pool: PoolName,
        written: list[tuple[str, Tree]],
        ranges: list[tuple[str, AddressRange]],
    ) -> list[BGPAdvertisement]:
        """The pool's advertisements (a default one if none written); duplicates are errors."""
        if not written:
            return [BGPAdvertisement(name=pool, pools=(pool,))]
        out: list[BGPAdvertisement] = []
        seen: dict[BGPAdvertisement, int] = {}
        for i, (where, m) in enumerate(written):
            adv = self.advertisement(m, where, pool, i, ranges)
            if adv is None:
                continue
            unnamed = replace(adv, name="")
            if unnamed in seen:
                self.issues.error(where, f"duplicate of bgp-advertisements[{seen[unnamed]}]")
            else:
                seen[unnamed] = i
            out.append(adv)
        return out

    def advertisement(
        self,
        m: Tree,
        where: str,
        pool: PoolName,
        index: int,
        ranges: list[tuple[str, AddressRange]],
    ) -> BGPAdvertisement | None:
        issues = self.issues
        errors = len(issues.errors)
        issues.reject_unknown(m, ADVERTISEMENT_KEYS, where)
        length = self.aggregation_length(m, where, "aggregation-length", Family.V4, ranges)
        length_v6 = self.aggregation_length(m, where, "aggregation-length-v6", Family.V6, ranges)
        local_pref = issues.get_int(m, "localpref", where, lo=0, hi=UINT32_MAX)
        communities: set[Community] = set()
        for i, value in enumerate(issues.get_list(m, "communities", where) or []):
            c_where = at(at(where, "communities"), i)
            community = issues.community(value, c_where, self.aliases, allow_large=False)
            if community is not None:
                communities.add(community)
        if len(issues.errors) > errors:
            return None
        return BGPAdvertisement(
            name=f"{pool}/bgp-advertisements[{index}]",  # mirrors the config path
            pools=(pool,),
            aggregation_length=32 if length is None else length,
            aggregation_length_v6=128 if length_v6 is None else length_v6,
            local_pref=local_pref,
            communities=tuple(sorted(communities)),
        )

    def aggregation_length(
        self,
        m: Tree,
        where: str,
        key: str,
        family: Family,
        ranges: list[tuple[str, AddressRange]],
    ) -> int | None:
        """0..max prefix, and at least the longest prefix any of the pool's blocks needs."""
        length = self.issues.get_int(m, key, where, lo=0, hi=family.max_prefix)
        if length is None:
            return None
        need, need_where, need_text = 0, "", ""
        for r_where, r in ranges:
            if r.family is family and longest_prefix(r) > need:
                need, need_where, need_text = longest_prefix(r), r_where, r.text
        if length < need:
            entry = need_where.rsplit(": ", 1)[-1]
            self.issues.error(
                at(where, key),
                f"{length}: must be at least {need} ({entry} {quote(need_text)} has a /{need})",
            )
            return None
        return length


def longest_prefix(r: AddressRange) -> int:
    """The longest prefix among the CIDR blocks that exactly cover r (MetalLB's rule input)."""
    blocks = ipaddress.summarize_address_range(r.first, r.last)
    return max(block.prefixlen for block in blocks)
