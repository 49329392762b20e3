"""Reads lbctl's bgpPeers (ASNs, timers, addresses, the password Secret); called by parse_lbctl."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lbctl.core.model import BGPPeer, IPAddress, PeerName, SecretRef
from lbctl.core.parse_common import Issues, Tree, at, format_duration, quote
from lbctl.core.parse_lbctl_rules import (
    DEFAULT_SECRET_KEY,
    DEFAULT_SECRET_NAMESPACE,
    PEER_KEYS,
    SECRET_KEYS,
    check_text,
    read_name,
    reject_unknown,
)

DEFAULT_HOLD_TIME = 90.0  # seconds, RFC 4271's suggestion and MetalLB's default
MIN_HOLD_TIME = 3.0  # RFC 4271 4.2: zero, or at least three seconds
MAX_HOLD_TIME = 65535.0  # the OPEN message's Hold Time is 16 bits


@dataclass
class PeersRead:
    peers: list[tuple[str, BGPPeer]] = field(default_factory=list)  # (where, peer)
    names: list[tuple[str, str]] = field(default_factory=list)  # (where of the name, name)


def read_peers(issues: Issues, root: Tree) -> PeersRead:
    out = PeersRead()
    for pos, entry in issues.entries(root, "bgpPeers", ""):
        errors = len(issues.errors)
        name, where = read_name(issues, entry, pos, "bgpPeer")
        if name is not None:
            out.names.append((at(pos, "name"), name))
        reject_unknown(issues, entry, PEER_KEYS, where)
        my_asn = issues.get_asn(entry, "myASN", where, required=True)
        peer_asn = issues.get_asn(entry, "peerASN", where, required=True)
        address = issues.get_ip(entry, "address", where, required=True)
        port = issues.get_int(entry, "port", where, lo=1, hi=65535)
        hold, keepalive = _timers(issues, entry, where)
        router_id = _router_id(issues, entry, where)
        source = _source_address(issues, entry, where, address)
        multihop = issues.get_bool(entry, "ebgpMultiHop", where)
        if multihop and my_asn is not None and my_asn == peer_asn:
            issues.error(at(where, "ebgpMultiHop"), "not allowed on iBGP (myASN equals peerASN)")
        selectors = issues.selectors(entry, "nodeSelectors", where)
        secret = _password_secret(issues, entry, where)
        if name is None or len(issues.errors) > errors:
            continue
        assert my_asn is not None and peer_asn is not None and address is not None
        peer = BGPPeer(
            name=PeerName(name),
            my_asn=my_asn,
            peer_asn=peer_asn,
            address=address,
            port=179 if port is None else port,
            hold_time=DEFAULT_HOLD_TIME if hold is None else hold,
            keepalive_time=keepalive,
            router_id=router_id,
            source_address=source,
            ebgp_multihop=bool(multihop),
            node_selectors=selectors,
            password_secret=secret,
        )
        out.peers.append((where, peer))
    return out


def _seconds(issues: Issues, entry: Tree, key: str, where: str) -> tuple[float | None, str]:
    """A duration in whole seconds (BGP's timers are), and its text for messages."""
    value = issues.get_duration(entry, key, where)
    text = entry.get(key)
    text = text if isinstance(text, str) else ""
    if value is not None and value != int(value):
        issues.error(at(where, key), f"{quote(text)}: must be whole seconds")
        return None, text
    return value, text


def _timers(issues: Issues, entry: Tree, where: str) -> tuple[float | None, float | None]:
    """(holdTime, keepaliveTime) as written; None when absent or wrong (default: 90s, hold/3)."""
    hold, hold_text = _seconds(issues, entry, "holdTime", where)
    if hold is not None and 0 < hold < MIN_HOLD_TIME:
        issues.error(at(where, "holdTime"), f"{quote(hold_text)}: must be 0 or at least 3s")
        hold = None
    elif hold is not None and hold > MAX_HOLD_TIME:
        issues.error(at(where, "holdTime"), f"{quote(hold_text)}: must be at most 65535s")
        hold = None
    keepalive, keep_text = _seconds(issues, entry, "keepaliveTime", where)
    hold_valid = hold is not None or "holdTime" not in entry or entry["holdTime"] is None
    effective_hold = DEFAULT_HOLD_TIME if hold is None else hold
    if keepalive is None or not hold_valid:
        return hold, keepalive
    w = at(where, "keepaliveTime")
    if keepalive > effective_hold:
        limit = format_duration(effective_hold)
        issues.error(w, f"{quote(keep_text)}: must not be more than holdTime ({limit})")
        return hold, None
    if keepalive == 0 and effective_hold > 0:
        issues.error(w, f"{quote(keep_text)}: must be more than 0 unless holdTime is 0")
        return hold, None
    return hold, keepalive


def _router_id(issues: Issues, entry: Tree, where: str) -> ipaddress.IPv4Address | None:
    ip = issues.get_ip(entry, "routerID", where)
    if ip is None or isinstance(ip, ipaddress.IPv4Address):
        return ip
    text = entry.get("routerID")
    issues.error(at(where, "routerID"), f"{quote(str(text))}: must be an IPv4 address")
    return None


def _source_address(
    issues: Issues, entry: Tree, where: str, address: IPAddress | None
) -> IPAddress | None:
    ip = issues.get_ip(entry, "sourceAddress", where)
    if ip is None or address is None or ip.version == address.version:
        return ip
    text = entry.get("sourceAddress")
    family = f"IPv{address.version}"
    message = f"{quote(str(text))}: must be of the same IP family as address ({family})"
    issues.error(at(where, "sourceAddress"), message)
    return None


def _password_secret(issues: Issues, entry: Tree, where: str) -> SecretRef | None:
    m = issues.get_map(entry, "passwordSecret", where)
    if m is None:
        return None
    w = at(where, "passwordSecret")
    reject_unknown(issues, m, SECRET_KEYS, w)
    name = issues.get_str(m, "name", w, required=True)
    namespace = issues.get_str(m, "namespace", w)
    key = issues.get_str(m, "key", w)
    ok = [
        name is not None and check_text(issues, name, at(w, "name"), "name"),
        namespace is None or check_text(issues, namespace, at(w, "namespace"), "namespace name"),
        key is None or check_text(issues, key, at(w, "key"), "Secret key"),
    ]
    if not all(ok) or name is None:
        return None
    return SecretRef(
        namespace=namespace or DEFAULT_SECRET_NAMESPACE,
        name=name,
        key=key or DEFAULT_SECRET_KEY,
    )
