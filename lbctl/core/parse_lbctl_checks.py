"""Checks across the objects of one lbctl document (names, references, overlaps, aggregation,
warnings); called by parse_lbctl once every object has been read."""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from lbctl.core.model import (
    AddressRange,
    BGPAdvertisement,
    BGPPeer,
    Family,
    L2Advertisement,
    Pool,
    PoolName,
)
from lbctl.core.parse_common import Issues, at, quote

if TYPE_CHECKING:
    from lbctl.core.parse_lbctl import PoolsRead
    from lbctl.core.parse_lbctl_adv import Refs
    from lbctl.core.parse_lbctl_peers import PeersRead


def check_document(
    issues: Issues,
    *,
    pools: PoolsRead,
    l2: list[tuple[str, L2Advertisement]],
    bgp: list[tuple[str, BGPAdvertisement]],
    peers: PeersRead,
    refs: Refs,
) -> None:
    issues.check_unique(pools.names, "pool name")
    issues.check_unique(refs.l2_names, "l2Advertisement name")
    issues.check_unique(refs.bgp_names, "bgpAdvertisement name")
    issues.check_unique(peers.names, "bgpPeer name")
    issues.check_overlaps(pools.ranges)
    _check_refs(issues, refs.pools, {name for _, name in pools.names}, "pool")
    _check_refs(issues, refs.peers, {name for _, name in peers.names}, "bgpPeer")
    _check_duplicate_sessions(issues, peers.peers)
    by_name = {p.name: p for _, p in pools.pools}
    for where, adv in bgp:
        _check_aggregation(issues, where, adv, by_name)
    _warn_unadvertised(issues, pools.pools, l2, bgp)
    _warn_local_pref(issues, bgp, [p for _, p in peers.peers])


def _check_refs(
    issues: Issues, refs: Iterable[tuple[str, str]], defined: set[str], what: str
) -> None:
    for where, name in refs:
        if name in defined:
            continue
        close = difflib.get_close_matches(name, sorted(defined), n=1)
        hint = f" (did you mean {quote(close[0])}?)" if close else ""
        issues.error(where, f"{quote(name)}: no such {what}{hint}")


def _check_duplicate_sessions(issues: Issues, peers: list[tuple[str, BGPPeer]]) -> None:
    """Two peers with one address, port and node selection would be one session twice."""
    seen: dict[tuple[object, ...], str] = {}
    for where, peer in peers:
        key = (peer.address, peer.port, peer.node_selectors)
        if key in seen:
            issues.error(
                at(where, "address"),
                f"{quote(str(key[0]))}: same address, port and nodeSelectors as {seen[key]}",
            )
        else:
            seen[key] = where


def most_specific_prefix(r: AddressRange) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The longest prefix among the CIDRs that exactly cover r (MetalLB summarises ranges so)."""
    first, last = r.first, r.last
    if isinstance(first, ipaddress.IPv4Address) and isinstance(last, ipaddress.IPv4Address):
        return max(ipaddress.summarize_address_range(first, last), key=lambda n: n.prefixlen)
    assert isinstance(first, ipaddress.IPv6Address) and isinstance(last, ipaddress.IPv6Address)
    return max(ipaddress.summarize_address_range(first, last), key=lambda n: n.prefixlen)


def _check_aggregation(
    issues: Issues, where: str, adv: BGPAdvertisement, pools: Mapping[PoolName, Pool]
) -> None:
    """An aggregate shorter than a pool's own prefix would announce addresses outside it."""
    names = adv.pools or tuple(pools)
    lengths = {Family.V4: adv.aggregation_length, Family.V6: adv.aggregation_length_v6}
    keys = {Family.V4: "aggregationLength", Family.V6: "aggregationLengthV6"}
    for name in names:
        pool = pools.get(name)
        if pool is None:
            continue
        for family in sorted(pool.families()):
            ranges = [r for r in pool.ranges if r.family is family]
            r, net = max(
                ((r, most_specific_prefix(r)) for r in ranges), key=lambda p: p[1].prefixlen
            )
            if net.prefixlen <= lengths[family]:
                continue
            origin = "" if str(net) == r.text.strip() else f" (from {quote(r.text)})"
            issues.error(
                at(where, keys[family]),
                f"{lengths[family]}: shorter than the prefix {net} of pool {quote(name)}{origin}",
            )


def _warn_unadvertised(
    issues: Issues,
    pools: list[tuple[str, Pool]],
    l2: list[tuple[str, L2Advertisement]],
    bgp: list[tuple[str, BGPAdvertisement]],
) -> None:
    """A pool no advertisement selects hands out addresses nobody announces (a silent failure)."""
    advertised: set[str] = set()
    every_pool = [p.name for _, p in pools]
    for adv in [a for _, a in l2] + [a for _, a in bgp]:
        advertised.update(adv.pools or every_pool)
    for where, pool in pools:
        if pool.name not in advertised:
            issues.warn(where, "no l2Advertisement or bgpAdvertisement announces this pool")


def _warn_local_pref(
    issues: Issues, bgp: list[tuple[str, BGPAdvertisement]], peers: list[BGPPeer]
) -> None:
    """localPref is an iBGP attribute: say so when every peer it would go to is eBGP."""
    for where, adv in bgp:
        if adv.local_pref is None:
            continue
        targets = [p for p in peers if not adv.peers or p.name in adv.peers]
        if targets and not any(p.is_ibgp for p in targets):
            issues.warn(at(where, "localPref"), "only sent to iBGP peers, and every peer is eBGP")
