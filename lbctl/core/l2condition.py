"""The `lbctl.io/AnnouncedL2` condition: what it says of one Service of a planned group; for the
speaker's status writer. Pure: the time comes in as an argument.

The shape (Verdict, clip, find, build, removal) is lbctl.core.condition's, shared with the
controller's `lbctl.io/IPAllocated`: a metav1.Condition whose reason is a CamelCase enum value
(L2Success, L2Failure) and whose message is deterministic, so the same plan and announcer give the
same bytes and an unchanged condition is never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from lbctl.core import condition as condition_shape
from lbctl.core.condition import MAX_MESSAGE, Verdict, clip
from lbctl.core.l2plan import AnnouncementGroup
from lbctl.core.model import IPAddress, NodeName, ServiceKey
from lbctl.core.reasons import L2Failure, L2Success, NodeSkip

__all__ = [  # clip and MAX_MESSAGE: lbctl.core.condition's, re-exported
    "CONDITION_TYPE",
    "KIND",
    "MAX_MESSAGE",
    "NAMES_SHOWN",
    "L2Verdict",
    "clip",
    "condition",
    "failure_message",
    "find",
    "ips_text",
    "names",
    "removal",
    "skips",
    "up_to_date",
    "verdict",
]

CONDITION_TYPE = "lbctl.io/AnnouncedL2"
# Nodes named per skip reason in a NoEligibleNode message; the rest are counted, so the message
# stays short at 1,000 nodes.
NAMES_SHOWN = 5


class L2Verdict(Verdict[str]):
    """What the condition should say about one Service (lbctl.core.condition's Verdict; its
    reason an L2Success / L2Failure value, or BGPSuccess / BGPFailure for bgpcondition)."""

    __slots__ = ()

    @property
    def announced(self) -> bool:
        return self.held


def verdict(
    group: AnnouncementGroup,
    service: ServiceKey,
    announcer: NodeName | None,
    interfaces: Sequence[str] = (),
) -> L2Verdict:
    """The condition of `service`, one of `group.services`.

    `announcer` is the node answering for the group's IPs now (the acting owner: rank 1, or the
    monitor that took over), None when nobody does; `interfaces` those it answers on, empty when
    it has none for the IPs. Nobody announcing a group that has eligible nodes means none of them
    has an interface for the IPs (else the owner or a monitor would): NoInterfaceForIP.
    """
    ips = ips_text(group.ips)
    if group.failure is not None:
        return L2Verdict(False, group.failure.value, failure_message(group))
    if service in group.idle:
        return _idle(group, service, announcer)
    no_interface = L2Failure.NO_INTERFACE_FOR_IP.value
    if announcer is None:
        ranked = names(group.ranking)
        message = f"no eligible node has an interface for {ips} (eligible: {ranked})"
        return L2Verdict(False, no_interface, message)
    if not interfaces:
        wanted = ", ".join(group.interfaces_for(announcer)) or "one whose subnet holds it"
        message = f"node {announcer} has no interface for {ips} (allowed: {wanted})"
        return L2Verdict(False, no_interface, message)
    message = f"announced {ips} by node {announcer} on {', '.join(interfaces)}"
    return L2Verdict(True, L2Success.ANNOUNCED.value, message + _shared(group, service))


def failure_message(group: AnnouncementGroup) -> str:
    """Why nobody may announce the group (group.failure is set), naming the object or field."""
    match group.failure:
        case L2Failure.NO_L2_ADVERTISEMENT if group.pool is None:
            return f"{group.key_ip} is in no pool of the config"
        case L2Failure.NO_L2_ADVERTISEMENT:
            return f"pool {group.pool}: no l2Advertisement announces it"
        case L2Failure.NO_READY_ENDPOINTS:
            services = ", ".join(group.services)
            return f"no ready or serving endpoint in the EndpointSlices of {services}"
        case _:
            why = skips(group.skipped, lambda r: _label(r, group))
            return f"no eligible node for {ips_text(group.ips)}: {why}"


def _idle(group: AnnouncementGroup, service: ServiceKey, announcer: NodeName | None) -> L2Verdict:
    """A Service without endpoints whose IPs are announced for the others sharing them."""
    message = f"no ready or serving endpoint in the EndpointSlices of {service}"
    others = ", ".join(s for s in group.services if s != service)
    if announcer is not None:
        message += f"; {ips_text(group.ips)} announced by node {announcer} for {others}"
    return L2Verdict(False, L2Failure.NO_READY_ENDPOINTS.value, message)


def skips(skipped: Mapping[NodeName, NodeSkip], label: Callable[[NodeSkip], str]) -> str:
    """`NodeNotReady: a, b; NoLocalEndpoint (externalTrafficPolicy Local): c`, NodeSkip order;
    `label` words each reason. Shared with bgpcondition."""
    if not skipped:
        return "no Nodes"
    parts = []
    for reason in NodeSkip:
        nodes = sorted(n for n, r in skipped.items() if r is reason)
        if nodes:
            parts.append(f"{label(reason)}: {names(nodes)}")
    return "; ".join(parts)


def _label(reason: NodeSkip, group: AnnouncementGroup) -> str:
    if reason is NodeSkip.NODE_NOT_SELECTED:
        return f"{reason} (nodeSelectors of l2Advertisement {', '.join(group.advertisements)})"
    if reason is NodeSkip.NO_LOCAL_ENDPOINT:
        return f"{reason} (externalTrafficPolicy Local)"
    return str(reason)


def names(nodes: Sequence[str]) -> str:
    """At most NAMES_SHOWN names, the rest counted."""
    shown = ", ".join(nodes[:NAMES_SHOWN])
    rest = len(nodes) - NAMES_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def ips_text(ips: Sequence[IPAddress]) -> str:
    return ", ".join(str(ip) for ip in ips)


def _shared(group: AnnouncementGroup, service: ServiceKey) -> str:
    others = [s for s in group.services if s != service]
    return f" (shared with {', '.join(others)})" if others else ""


# --- the condition as written --------------------------------------------------------------------


KIND = condition_shape.Kind(CONDITION_TYPE)
find = KIND.find  # our condition in a Service's status mapping, or None
up_to_date = KIND.up_to_date  # whether find()'s result already says a verdict
condition = KIND.condition  # the condition to write (lastTransitionTime kept unless it flips)
removal = KIND.removal  # a strategic-merge list entry deleting our condition
