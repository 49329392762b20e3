"""Reads lbctl's l2Advertisements and bgpAdvertisements; called by parse_lbctl.

Names of pools and peers are only recorded here (in Refs); whether they exist is checked once
everything is read (parse_lbctl_checks), so an entry with other errors still gets them checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbctl.core.model import (
    BGPAdvertisement,
    Community,
    L2Advertisement,
    PeerName,
    PoolName,
)
from lbctl.core.parse_common import UINT32_MAX, Issues, Tree, at
from lbctl.core.parse_lbctl_rules import (
    BGP_ADV_KEYS,
    L2_KEYS,
    check_text,
    read_name,
    reject_unknown,
)


@dataclass
class Refs:
    """Names written in the document, for the checks across objects."""

    alias_names: frozenset[str] = frozenset()  # every community alias written, valid or not
    pools: list[tuple[str, str]] = field(default_factory=list)  # (where, pool name) referenced
    peers: list[tuple[str, str]] = field(default_factory=list)  # (where, peer name) referenced
    l2_names: list[tuple[str, str]] = field(default_factory=list)  # (where, name) defined
    bgp_names: list[tuple[str, str]] = field(default_factory=list)


def read_l2_advertisements(
    issues: Issues, root: Tree, refs: Refs
) -> list[tuple[str, L2Advertisement]]:
    out: list[tuple[str, L2Advertisement]] = []
    for pos, entry in issues.entries(root, "l2Advertisements", ""):
        errors = len(issues.errors)
        name, where = read_name(issues, entry, pos, "l2Advertisement")
        if name is not None:
            refs.l2_names.append((at(pos, "name"), name))
        reject_unknown(issues, entry, L2_KEYS, where)
        pools = _names(issues, entry, "pools", where, refs.pools)
        selectors = issues.selectors(entry, "nodeSelectors", where)
        interfaces = _interfaces(issues, entry, where)
        if name is not None and len(issues.errors) == errors:
            adv = L2Advertisement(name, tuple(map(PoolName, pools)), selectors, interfaces)
            out.append((where, adv))
    return out


def read_bgp_advertisements(
    issues: Issues, root: Tree, aliases: dict[str, Community], refs: Refs
) -> list[tuple[str, BGPAdvertisement]]:
    out: list[tuple[str, BGPAdvertisement]] = []
    for pos, entry in issues.entries(root, "bgpAdvertisements", ""):
        errors = len(issues.errors)
        name, where = read_name(issues, entry, pos, "bgpAdvertisement")
        if name is not None:
            refs.bgp_names.append((at(pos, "name"), name))
        reject_unknown(issues, entry, BGP_ADV_KEYS, where)
        pools = _names(issues, entry, "pools", where, refs.pools)
        length = issues.get_int(entry, "aggregationLength", where, lo=0, hi=32)
        length_v6 = issues.get_int(entry, "aggregationLengthV6", where, lo=0, hi=128)
        local_pref = issues.get_int(entry, "localPref", where, lo=0, hi=UINT32_MAX)
        communities = _communities(issues, entry, where, aliases, refs.alias_names)
        peers = _names(issues, entry, "peers", where, refs.peers)
        selectors = issues.selectors(entry, "nodeSelectors", where)
        if name is None or len(issues.errors) > errors:
            continue
        adv = BGPAdvertisement(
            name=name,
            pools=tuple(map(PoolName, pools)),
            aggregation_length=32 if length is None else length,
            aggregation_length_v6=128 if length_v6 is None else length_v6,
            local_pref=local_pref,
            communities=communities,
            peers=tuple(map(PeerName, peers)),
            node_selectors=selectors,
        )
        out.append((where, adv))
    return out


def _names(
    issues: Issues, entry: Tree, key: str, where: str, refs: list[tuple[str, str]]
) -> tuple[str, ...]:
    """A list of names of other objects (pools, peers): recorded in refs, no name twice."""
    names = issues.get_str_list(entry, key, where) or ()
    places = [(at(at(where, key), i), name) for i, name in enumerate(names)]
    issues.check_unique(places, key.removesuffix("s"))
    refs.extend(places)
    return names


def _interfaces(issues: Issues, entry: Tree, where: str) -> tuple[str, ...]:
    names = issues.get_str_list(entry, "interfaces", where) or ()
    places = [(at(at(where, "interfaces"), i), name) for i, name in enumerate(names)]
    for w, name in places:
        check_text(issues, name, w, "interface name")
    issues.check_unique(places, "interface")
    return names


def _communities(
    issues: Issues,
    entry: Tree,
    where: str,
    aliases: dict[str, Community],
    alias_names: frozenset[str],
) -> tuple[Community, ...]:
    """Values or aliases; an alias whose own value is wrong was reported where it is defined."""
    items = issues.get_list(entry, "communities", where) or []
    found: list[tuple[str, Community]] = []
    for i, item in enumerate(items):
        w = at(at(where, "communities"), i)
        if isinstance(item, str) and item in alias_names and item not in aliases:
            continue
        community = issues.community(item, w, aliases)
        if community is not None:
            found.append((w, community))
    issues.check_unique([(w, str(c)) for w, c in found], "community")
    return tuple(c for _, c in found)
