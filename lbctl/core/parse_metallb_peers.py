"""MetalLB legacy peers[] and bfd-profiles[], read strictly into the model; used by parse_metallb.

An inline password becomes a model.Secret at once and is never put in any message.
"""

from __future__ import annotations

from collections.abc import Collection
from ipaddress import IPv4Address

from lbctl.core.model import BFDProfile, BGPPeer, IPAddress, PeerName, Secret
from lbctl.core.parse_common import (
    KEBAB_KEYS,
    Issues,
    Tree,
    at,
    format_duration,
    object_where,
    quote,
)

PEER_KEYS = (
    "peer-address",
    "peer-asn",
    "my-asn",
    "peer-port",
    "hold-time",
    "keepalive-time",
    "router-id",
    "source-address",
    "password",
    "ebgp-multihop",
    "node-selectors",
    "bfd-profile",
)
BFD_KEYS = (
    "name",
    "receive-interval",
    "transmit-interval",
    "detect-multiplier",
    "echo-interval",
    "echo-mode",
    "passive-mode",
    "minimum-ttl",
)
BFD_UNSUPPORTED = "bfd-profiles are not supported by lbctl (ExaBGP has no BFD); ignored"
DEFAULT_HOLD_TIME = 90.0
MIN_HOLD_TIME = 3.0  # RFC 4271 4.2: the hold time is 0 or at least three seconds
MAX_HOLD_TIME = 65535.0  # RFC 4271 4.2: a 16-bit count of seconds
MD5_KEY_MAX = 80  # Linux TCP_MD5SIG_MAXKEYLEN


def parse_peers(issues: Issues, top: Tree, bfd_names: Collection[str]) -> tuple[BGPPeer, ...]:
    """peers[] -> BGPPeer, named by address; an identical duplicate is an error."""
    peers: list[BGPPeer] = []
    seen: dict[BGPPeer, str] = {}
    for index_where, m in issues.entries(top, "peers", ""):
        peer = _peer(issues, m, index_where, bfd_names)
        if peer is None:
            continue
        if peer in seen:
            issues.error(index_where, f"identical to {seen[peer]} (duplicate peer)")
            continue
        seen[peer] = index_where
        peers.append(peer)
    return tuple(peers)


def _peer(issues: Issues, m: Tree, index_where: str, bfd_names: Collection[str]) -> BGPPeer | None:
    where = object_where("peer", m.get("peer-address"), index_where)
    errors = len(issues.errors)
    issues.reject_unknown(m, PEER_KEYS, where)
    address = issues.get_ip(m, "peer-address", where, required=True)
    peer_asn = issues.get_asn(m, "peer-asn", where, required=True)
    my_asn = issues.get_asn(m, "my-asn", where, required=True)
    port = issues.get_int(m, "peer-port", where, lo=1, hi=65535)
    hold, keepalive = _timers(issues, m, where)
    router_id = _router_id(issues, m, where)
    source = _source_address(issues, m, where, address)
    password = _password(issues, m, where)
    multihop = issues.get_bool(m, "ebgp-multihop", where)
    if multihop and my_asn is not None and my_asn == peer_asn:
        issues.error(
            at(where, "ebgp-multihop"), "not allowed on an iBGP session (my-asn = peer-asn)"
        )
    selectors = issues.selectors(m, "node-selectors", where, KEBAB_KEYS)
    bfd = issues.get_str(m, "bfd-profile", where)
    if bfd is not None and bfd not in bfd_names:
        issues.error(at(where, "bfd-profile"), f"{quote(bfd)}: no bfd-profiles entry has this name")
    if len(issues.errors) > errors or address is None or peer_asn is None or my_asn is None:
        return None
    return BGPPeer(
        name=PeerName(str(address)),
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
        password=password,
        bfd_profile=bfd,
    )


def _timers(issues: Issues, m: Tree, where: str) -> tuple[float | None, float | None]:
    """hold-time (0 or 3s..65535s) and keepalive-time (<= the hold time, default a third of it)."""
    errors = len(issues.errors)
    hold = issues.get_duration(m, "hold-time", where)
    if hold is not None and 0 < hold < MIN_HOLD_TIME:
        issues.error(
            at(where, "hold-time"), f"{quote(str(m['hold-time']))}: must be 0 or at least 3s"
        )
        hold = None
    elif hold is not None and hold > MAX_HOLD_TIME:
        issues.error(
            at(where, "hold-time"), f"{quote(str(m['hold-time']))}: must be at most 65535s"
        )
        hold = None
    hold_ok = len(issues.errors) == errors
    keepalive = issues.get_duration(m, "keepalive-time", where)
    limit = DEFAULT_HOLD_TIME if hold is None else hold
    if keepalive is not None and hold_ok and keepalive > limit:
        text = quote(str(m["keepalive-time"]))
        issues.error(
            at(where, "keepalive-time"),
            f"{text}: must not exceed hold-time ({format_duration(limit)})",
        )
        keepalive = None
    elif keepalive == 0 and hold_ok and limit > 0:
        # No keepalives under a running hold timer: the session would drop every hold-time.
        text = quote(str(m["keepalive-time"]))
        issues.error(at(where, "keepalive-time"), f"{text}: must not be 0 unless hold-time is 0")
        keepalive = None
    return hold, keepalive


def _router_id(issues: Issues, m: Tree, where: str) -> IPv4Address | None:
    ip = issues.get_ip(m, "router-id", where)
    if ip is None:
        return None
    if not isinstance(ip, IPv4Address):
        issues.error(at(where, "router-id"), f"{quote(str(ip))}: must be an IPv4 address")
        return None
    if int(ip) == 0:
        issues.error(at(where, "router-id"), '"0.0.0.0": must not be zero (RFC 6286)')
        return None
    return ip


def _source_address(
    issues: Issues, m: Tree, where: str, peer: IPAddress | None
) -> IPAddress | None:
    ip = issues.get_ip(m, "source-address", where)
    if ip is not None and peer is not None and ip.version != peer.version:
        issues.error(
            at(where, "source-address"),
            f"{quote(str(ip))}: must be of the same IP family as peer-address",
        )
        return None
    return ip


def _password(issues: Issues, m: Tree, where: str) -> Secret | None:
    """The inline TCP-MD5 password, as a Secret; no message ever shows any of it."""
    value = issues.get_str(m, "password", where)
    if not value:
        return None
    if not value.isprintable():
        issues.error(at(where, "password"), "must not contain control characters")
        return None
    if len(value.encode()) > MD5_KEY_MAX:
        issues.error(
            at(where, "password"), f"longer than {MD5_KEY_MAX} bytes, the TCP-MD5 key limit"
        )
        return None
    return Secret(value)


def parse_bfd_profiles(issues: Issues, top: Tree) -> tuple[tuple[BFDProfile, ...], frozenset[str]]:
    """bfd-profiles[] -> (valid profiles, every name written); warns they are not used."""
    entries = issues.entries(top, "bfd-profiles", "")
    if entries:
        issues.warn("bfd-profiles", BFD_UNSUPPORTED)
    profiles: list[BFDProfile] = []
    names: list[tuple[str, str]] = []
    for index_where, m in entries:
        where = object_where("bfd-profile", m.get("name"), index_where)
        errors = len(issues.errors)
        issues.reject_unknown(m, BFD_KEYS, where)
        name = issues.get_name(m, "name", where)
        ms = {
            key: issues.get_int(m, key, where, lo=10, hi=60000)
            for key in ("receive-interval", "transmit-interval", "echo-interval")
        }
        multiplier = issues.get_int(m, "detect-multiplier", where, lo=2, hi=255)
        echo_mode = issues.get_bool(m, "echo-mode", where)
        passive_mode = issues.get_bool(m, "passive-mode", where)
        min_ttl = issues.get_int(m, "minimum-ttl", where, lo=1, hi=254)
        if name is None:
            continue
        names.append((at(index_where, "name"), name))
        if len(issues.errors) > errors:
            continue
        defaults = BFDProfile(name)
        profiles.append(
            BFDProfile(
                name=name,
                receive_interval_ms=ms["receive-interval"] or defaults.receive_interval_ms,
                transmit_interval_ms=ms["transmit-interval"] or defaults.transmit_interval_ms,
                detect_multiplier=multiplier or defaults.detect_multiplier,
                echo_interval_ms=ms["echo-interval"] or defaults.echo_interval_ms,
                echo_mode=bool(echo_mode),
                passive_mode=bool(passive_mode),
                minimum_ttl=min_ttl or defaults.minimum_ttl,
            )
        )
    issues.check_unique(names, "bfd-profile name")
    return tuple(profiles), frozenset(n for _, n in names)
