"""Config -> a JSON-ready dict, for `lbctl validate --output json` (and later `lbctl status`).

Keys are lbctl's camelCase whatever format the config was read from. Lists keep the order the
user wrote; keys come in a fixed order, so the same config always renders to the same text.
Inline passwords never appear: they render as "<redacted>".
"""

from __future__ import annotations

from lbctl.core.model import (
    AddressRange,
    AllocationScope,
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    Config,
    L2Advertisement,
    LabelSelector,
    Pool,
    Secret,
)

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
JSONObject = dict[str, JSONValue]


def config_to_json(config: Config) -> JSONObject:
    return {
        "format": str(config.source_format),
        "allowRenumber": config.allow_renumber,
        "pools": [pool_to_json(p) for p in config.pools],
        "l2Advertisements": [l2_to_json(a) for a in config.l2_advertisements],
        "bgpAdvertisements": [bgp_to_json(a) for a in config.bgp_advertisements],
        "peers": [peer_to_json(p) for p in config.peers],
        "bfdProfiles": [bfd_to_json(b) for b in config.bfd_profiles],
    }


def range_text(r: AddressRange) -> str:
    """The range as the user wrote it, else `first-last`."""
    return r.text or f"{r.first}-{r.last}"


def pool_to_json(pool: Pool) -> JSONObject:
    families = sorted(pool.families())
    return {
        "name": pool.name,
        "addresses": [range_text(r) for r in pool.ranges],
        "autoAssign": pool.auto_assign,
        "avoidBuggyIPs": pool.avoid_buggy_ips,
        # Sizes are exact integers even for an IPv6 /64 (JSON numbers have no size limit).
        "size": {f.k8s: pool.size(f) for f in families},
        "allocation": None if pool.scope is None else scope_to_json(pool.scope),
    }


def scope_to_json(scope: AllocationScope) -> JSONObject:
    return {
        "priority": scope.priority,
        "namespaces": list(scope.namespaces),
        "namespaceSelectors": selectors_to_json(scope.namespace_selectors),
        "serviceSelectors": selectors_to_json(scope.service_selectors),
    }


def selectors_to_json(selectors: tuple[LabelSelector, ...]) -> list[JSONValue]:
    return [selector_to_json(s) for s in selectors]


def selector_to_json(selector: LabelSelector) -> JSONObject:
    expressions: list[JSONValue] = [
        {"key": e.key, "operator": str(e.operator), "values": list(e.values)}
        for e in selector.match_expressions
    ]
    return {"matchLabels": dict(selector.match_labels), "matchExpressions": expressions}


def l2_to_json(adv: L2Advertisement) -> JSONObject:
    return {
        "name": adv.name,
        "pools": list(adv.pools),
        "nodeSelectors": selectors_to_json(adv.node_selectors),
        "interfaces": list(adv.interfaces),
    }


def bgp_to_json(adv: BGPAdvertisement) -> JSONObject:
    return {
        "name": adv.name,
        "pools": list(adv.pools),
        "aggregationLength": adv.aggregation_length,
        "aggregationLengthV6": adv.aggregation_length_v6,
        "localPref": adv.local_pref,
        "communities": [str(c) for c in adv.communities],
        "peers": list(adv.peers),
        "nodeSelectors": selectors_to_json(adv.node_selectors),
    }


def duration_text(seconds: float) -> str:
    """90.0 -> "90s", 1.5 -> "1.5s": the way durations are written in both formats."""
    return f"{seconds:g}s"


def redacted(secret: Secret | None) -> str | None:
    return None if secret is None else Secret.REDACTED


def peer_to_json(peer: BGPPeer) -> JSONObject:
    keepalive = peer.keepalive_time
    ref = peer.password_secret
    return {
        "name": peer.name,
        "myASN": peer.my_asn,
        "peerASN": peer.peer_asn,
        "address": str(peer.address),
        "port": peer.port,
        "holdTime": duration_text(peer.hold_time),
        "keepaliveTime": duration_text(peer.hold_time / 3 if keepalive is None else keepalive),
        "routerID": None if peer.router_id is None else str(peer.router_id),
        "sourceAddress": None if peer.source_address is None else str(peer.source_address),
        "ebgpMultiHop": peer.ebgp_multihop,
        "nodeSelectors": selectors_to_json(peer.node_selectors),
        "password": redacted(peer.password),
        "passwordSecret": None
        if ref is None
        else {"namespace": ref.namespace, "name": ref.name, "key": ref.key},
        "bfdProfile": peer.bfd_profile,
    }


def bfd_to_json(profile: BFDProfile) -> JSONObject:
    return {
        "name": profile.name,
        "receiveInterval": profile.receive_interval_ms,
        "transmitInterval": profile.transmit_interval_ms,
        "detectMultiplier": profile.detect_multiplier,
        "echoInterval": profile.echo_interval_ms,
        "echoMode": profile.echo_mode,
        "passiveMode": profile.passive_mode,
        "minimumTtl": profile.minimum_ttl,
        "used": False,  # ExaBGP has no BFD: profiles are validated, not applied
    }
