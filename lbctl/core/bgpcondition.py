"""The `lbctl.io/AnnouncedBGP` condition: what it says of one planned Service, and the session
states each speaker publishes on its Node so that the writer can name every announcing node's
peers. Pure: the time comes in as an argument.

The condition lists the announcing nodes (rank order) and, for each, the peers its routes go to
and whether each session is Established, or says why nobody announces. It is True while at least
one announcing node has an Established session to a peer of the Service's routes. (MetalLB's
ServiceBGPStatus lists only the peers a Service is meant for.)

Session states travel on the Node as the annotation `lbctl.io/bgp-sessions`, a JSON object of
peer name -> "Established" | "Down", written by that node's speaker only when a session flips:
a few writes per flap per node, never one per route. The writer (ServiceRoutes.writer) also
checks its own announcer's acknowledgements: it says "announced" only once its own routes for
the Service were acknowledged on its Established sessions.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping

from lbctl.core.bgpplan import ServiceRoutes
from lbctl.core.condition import Kind
from lbctl.core.l2condition import NAMES_SHOWN, ips_text, skips
from lbctl.core.l2condition import L2Verdict as Verdict
from lbctl.core.model import NodeName, PeerName
from lbctl.core.reasons import BGPFailure, BGPSuccess, NodeSkip

CONDITION_TYPE = "lbctl.io/AnnouncedBGP"
SESSIONS_ANNOTATION = "lbctl.io/bgp-sessions"
MAX_ANNOTATION = 8192  # bytes of JSON; a node holds a handful of sessions


class SessionState(enum.StrEnum):
    ESTABLISHED = "Established"
    DOWN = "Down"


Sessions = Mapping[PeerName, SessionState]  # one node's sessions


def encode_sessions(sessions: Sessions) -> str:
    """The annotation's value: sorted, compact, so equal states give equal bytes."""
    return json.dumps({str(k): str(v) for k, v in sorted(sessions.items())}, separators=(",", ":"))


def decode_sessions(text: object) -> dict[PeerName, SessionState]:
    """The annotation read back; anything unreadable (absent, not JSON, unknown states) counts
    as no session known, which the condition shows as Down."""
    if not isinstance(text, str) or len(text) > MAX_ANNOTATION:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    states = {s.value: s for s in SessionState}
    return {PeerName(k): states[v] for k, v in raw.items() if isinstance(k, str) and v in states}


def sessions_of(node_body: Mapping[str, object]) -> dict[PeerName, SessionState]:
    meta = node_body.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(annotations, Mapping):
        return {}
    return decode_sessions(annotations.get(SESSIONS_ANNOTATION))


def verdict(
    plan: ServiceRoutes,
    sessions: Mapping[NodeName, Sessions],
    *,
    own_node: NodeName,
    own_sent: bool,
) -> Verdict:
    """The condition of `plan.service`, written by `own_node`.

    `sessions` holds each node's published session states (own_node's own, current ones
    included); `own_sent` whether own_node's announcer acknowledged all of its routes for the
    Service on its Established sessions (meaningless when own_node does not announce it).
    """
    ips = ", ".join(str(ip) for ip in plan.ips)
    if plan.failure is not None:
        return Verdict(False, plan.failure.value, failure_message(plan))
    parts: list[str] = []
    up = False
    for node in plan.ranking[:NAMES_SHOWN]:
        known = sessions.get(node, {})
        peers = []
        for peer in plan.peers.get(node, ()):
            state = known.get(peer, SessionState.DOWN)
            if node == own_node and state is SessionState.ESTABLISHED and not own_sent:
                peers.append(f"{peer} (Established, sending)")
                continue
            up = up or state is SessionState.ESTABLISHED
            peers.append(f"{peer} ({state})")
        parts.append(f"{node} to {', '.join(peers)}")
    more = len(plan.ranking) - NAMES_SHOWN
    if more > 0:
        parts.append(f"and {more} more nodes")
        up = up or any(
            sessions.get(n, {}).get(p) is SessionState.ESTABLISHED
            for n in plan.ranking[NAMES_SHOWN:]
            for p in plan.peers.get(n, ())
        )
    said = "; ".join(parts)
    if not up:
        message = f"no BGP session is Established to send {ips}: {said}"
        return Verdict(False, BGPFailure.NO_SESSION_ESTABLISHED.value, message)
    return Verdict(True, BGPSuccess.ANNOUNCED.value, f"announced {ips} by {said}")


def failure_message(plan: ServiceRoutes) -> str:
    """Why nobody announces the Service (plan.failure is set), naming the object or field."""
    match plan.failure:
        case BGPFailure.NO_BGP_ADVERTISEMENT if plan.pool is None:
            return f"{plan.ips[0]} is in no pool of the config"
        case BGPFailure.NO_BGP_ADVERTISEMENT:
            return f"pool {plan.pool}: no bgpAdvertisement announces it"
        case BGPFailure.NO_READY_ENDPOINTS:
            return f"no ready or serving endpoint in the EndpointSlices of {plan.service}"
        case _:
            why = skips(plan.skipped, lambda r: _label(r, plan))
            return f"no eligible node for {ips_text(plan.ips)}: {why}"


def _label(reason: NodeSkip, plan: ServiceRoutes) -> str:
    if reason is NodeSkip.NODE_NOT_SELECTED:
        return f"{reason} (nodeSelectors of bgpAdvertisement {', '.join(plan.advertisements)})"
    if reason is NodeSkip.NO_BGP_PEER:
        return f"{reason} (no peer's nodeSelectors select it, or not in the IP's family)"
    if reason is NodeSkip.NO_LOCAL_ENDPOINT:
        return f"{reason} (externalTrafficPolicy Local)"
    return str(reason)


# --- the condition as written --------------------------------------------------------------------


KIND = Kind(CONDITION_TYPE)
find = KIND.find
up_to_date = KIND.up_to_date
condition = KIND.condition
