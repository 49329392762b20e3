"""API bodies (raw JSON camelCase mappings) -> model objects; used by controller, speaker and CLI.

Service bodies are read here once (Node and EndpointSlice bodies in lbctl.core.adapt_nodes,
whose names this module re-exports); nothing past these modules looks at a raw body. Reading
never raises: a Service whose annotations or spec cannot be used becomes an AdaptFailure
(reason InvalidAnnotation) carrying every problem found.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lbctl.core import annotations as ann
from lbctl.core.adapt_nodes import (
    EndpointInfo,
    EndpointSliceInfo,
    NodeInfo,
    adapt_endpointslice,
    adapt_node,
)
from lbctl.core.adapt_read import ip_or_none as _ip
from lbctl.core.adapt_read import items as _list
from lbctl.core.adapt_read import mapping as _map
from lbctl.core.adapt_read import pairs as _pairs
from lbctl.core.adapt_read import quoted as _q
from lbctl.core.adapt_read import text as _text
from lbctl.core.adapt_read import timestamp as _timestamp
from lbctl.core.model import (
    Family,
    IPAddress,
    IPFamilyPolicy,
    PoolName,
    ServiceKey,
    ServicePort,
    ServiceRequest,
    TrafficPolicy,
    family_of,
    service_key,
)
from lbctl.core.reasons import AllocFailure

__all__ = [  # Node and EndpointSlice names live in adapt_nodes; re-exported for their callers
    "AdaptFailure",
    "EndpointInfo",
    "EndpointSliceInfo",
    "HeldService",
    "NodeInfo",
    "adapt_endpointslice",
    "adapt_held_service",
    "adapt_node",
    "adapt_service",
    "allocated_pool",
    "held_ips",
    "is_load_balancer",
    "key_of",
]

PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
_FAMILY_NAMES = {f.k8s: f for f in Family}


@dataclass(frozen=True, slots=True)
class AdaptFailure:
    """A Service that cannot be handed to the allocator, and why (every problem, `; `-joined)."""

    key: ServiceKey
    reason: AllocFailure
    message: str


# --- Services ------------------------------------------------------------------------------------


def key_of(body: Mapping[str, object]) -> ServiceKey:
    """ "namespace/name" of any namespaced object; a missing namespace is "default"."""
    meta = _map(body, "metadata")
    return service_key(_text(meta, "namespace") or "default", _text(meta, "name") or "")


def is_load_balancer(body: Mapping[str, object]) -> bool:
    return _map(body, "spec").get("type") == "LoadBalancer"


def held_ips(body: Mapping[str, object]) -> tuple[IPAddress, ...]:
    """The IPs in status.loadBalancer.ingress[].ip, deduplicated; hostnames and garbage ignored."""
    ingress = _list(_map(_map(body, "status"), "loadBalancer"), "ingress")
    ips: list[IPAddress] = []
    for entry in ingress:
        text = _text(entry, "ip")
        ip = _ip(text.strip()) if text else None
        if ip is not None and ip not in ips:
            ips.append(ip)
    return tuple(ips)


def allocated_pool(body: Mapping[str, object]) -> str | None:
    """The pool recorded on the Service: lbctl's annotation first, then MetalLB's two."""
    annotations = _map(_map(body, "metadata"), "annotations")
    for key in ann.keys_for(ann.IP_ALLOCATED_FROM_POOL):
        value = _text(annotations, key)
        if value and value.strip():
            # Interned: a handful of pool names, held by every Service the speaker keeps.
            return sys.intern(value.strip())
    return None


@dataclass(frozen=True, slots=True)
class HeldService:
    """A Service as the announcers see it: the IPs it holds and what decides who may announce."""

    key: ServiceKey
    ips: tuple[IPAddress, ...]  # status.loadBalancer.ingress[].ip in order; the first is the key
    traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER  # spec.externalTrafficPolicy
    allocated_pool: PoolName | None = None  # the ip-allocated-from-pool annotation
    load_balancer: bool = True  # spec.type is LoadBalancer
    lb_class: str | None = None  # spec.loadBalancerClass


def adapt_held_service(body: Mapping[str, object]) -> HeldService:
    """What the announcers need of a Service; never fails (a traffic policy other than Local,
    which the API server would have rejected, reads as Cluster)."""
    spec, pool = _map(body, "spec"), allocated_pool(body)
    local = spec.get("externalTrafficPolicy") == TrafficPolicy.LOCAL.value
    return HeldService(
        key=key_of(body),
        ips=held_ips(body),
        traffic_policy=TrafficPolicy.LOCAL if local else TrafficPolicy.CLUSTER,
        allocated_pool=PoolName(pool) if pool else None,
        load_balancer=is_load_balancer(body),
        lb_class=_text(spec, "loadBalancerClass"),
    )


def adapt_service(
    body: Mapping[str, object], *, namespace_labels: Mapping[str, str] | None = None
) -> ServiceRequest | AdaptFailure:
    """What a Service asks of the allocator. The caller checks is_load_balancer() first."""
    key = key_of(body)
    meta, spec = _map(body, "metadata"), _map(body, "spec")
    annotations = {k: v for k, v in _map(meta, "annotations").items() if isinstance(v, str)}
    problems: list[str] = []
    pool = _annotation(annotations, ann.ADDRESS_POOL, problems)
    sharing = _annotation(annotations, ann.ALLOW_SHARED_IP, problems)
    requested = _requested_ips(annotations, spec, problems)
    families, policy = _families(spec, requested, problems)
    ports = _ports(spec, problems)
    traffic = _traffic_policy(spec, problems)
    if problems:
        return AdaptFailure(key, AllocFailure.INVALID_ANNOTATION, "; ".join(problems))
    return ServiceRequest(
        key=key,
        families=families,
        family_policy=policy,
        requested_ips=tuple(ip for _, ip in requested),
        pool=PoolName(pool[1]) if pool else None,
        sharing_key=sharing[1] if sharing else None,
        ports=ports,
        traffic_policy=traffic,
        selector=_pairs(spec.get("selector")),
        labels=_pairs(meta.get("labels")),
        namespace_labels=_pairs(namespace_labels or {}),
        lb_class=_text(spec, "loadBalancerClass"),
        created=_timestamp(meta.get("creationTimestamp")),
    )


def _strip_list(value: str) -> str:
    return ",".join(part.strip() for part in value.split(","))


def _annotation(
    annotations: Mapping[str, str],
    name: str,
    problems: list[str],
    normalize: Callable[[str], str] = str.strip,
) -> tuple[str, str] | None:
    """(full key, value) of annotation `name` under any prefix; different values are a problem."""
    found = [(k, normalize(annotations[k])) for k in ann.keys_for(name) if k in annotations]
    found = [(k, v) for k, v in found if v]  # an empty annotation means "not set"
    for k, v in found[1:]:
        if v != found[0][1]:
            k0, v0 = found[0]
            problems.append(f"annotations {_q(k0)} ({_q(v0)}) and {_q(k)} ({_q(v)}) disagree")
            return None
    return found[0] if found else None


def _requested_ips(
    annotations: Mapping[str, str], spec: Mapping[str, object], problems: list[str]
) -> list[tuple[str, IPAddress]]:
    """(source, IP) for each requested IP: spec.loadBalancerIP or the loadBalancerIPs annotation."""
    listed = _annotation(annotations, ann.LOAD_BALANCER_IPS, problems, _strip_list)
    raw_spec = spec.get("loadBalancerIP")
    spec_text = raw_spec.strip() if isinstance(raw_spec, str) else raw_spec
    if spec_text in (None, ""):
        items = [] if listed is None else [(f"annotation {_q(listed[0])}", listed[1].split(","))]
    elif listed is not None:
        problems.append(
            f"spec.loadBalancerIP and annotation {_q(listed[0])} are both set: use the annotation"
        )
        return []
    else:
        items = [("spec.loadBalancerIP", [str(spec_text)])]
    result: list[tuple[str, IPAddress]] = []
    for source, texts in items:
        for text in texts:
            ip = _ip(text)
            if ip is None:
                problems.append(f"{source}: {_q(text)} is not an IP address")
            elif any(family_of(ip) == family_of(other) for _, other in result):
                problems.append(f"{source}: more than one {family_of(ip).k8s} address")
            else:
                result.append((source, ip))
    return result


def _families(
    spec: Mapping[str, object], requested: list[tuple[str, IPAddress]], problems: list[str]
) -> tuple[tuple[Family, ...], IPFamilyPolicy]:
    """spec.ipFamilies and spec.ipFamilyPolicy, defaulted the way the API server defaults them."""
    families = _listed_families(spec, problems)
    explicit = bool(families)
    given_policy = _family_policy(spec, problems)
    if not families:
        # No ipFamilies (a body that never went through an API server's defaulting): take the
        # families of the requested IPs, both for a dual-stack policy, IPv4 first by default.
        families = list(dict.fromkeys(family_of(ip) for _, ip in requested))
        if given_policy not in (None, IPFamilyPolicy.SINGLE_STACK):
            families += [f for f in Family if f not in families]
        families = families or [Family.V4]
    # The API server's default policy: two families listed means both are required.
    dual = IPFamilyPolicy.REQUIRE_DUAL_STACK
    policy = given_policy or (dual if len(families) > 1 else IPFamilyPolicy.SINGLE_STACK)
    if policy is IPFamilyPolicy.SINGLE_STACK and len(families) > 1:
        problems.append("spec.ipFamilyPolicy is SingleStack but two IP families are wanted")
    for source, ip in requested:
        if explicit and family_of(ip) not in families:
            wanted = " and ".join(f.k8s for f in families)
            problems.append(f"{source}: {_q(str(ip))} is {family_of(ip).k8s}, not {wanted}")
    return tuple(families), policy


def _listed_families(spec: Mapping[str, object], problems: list[str]) -> list[Family]:
    raw = spec.get("ipFamilies")
    families: list[Family] = []
    if raw is not None and not isinstance(raw, list):
        problems.append("spec.ipFamilies: not a list")
    for i, name in enumerate(raw if isinstance(raw, list) else []):
        family = _FAMILY_NAMES.get(name) if isinstance(name, str) else None
        if family is None:
            problems.append(f"spec.ipFamilies[{i}]: {_q(str(name))} is not IPv4 or IPv6")
        elif family in families:
            problems.append(f"spec.ipFamilies[{i}]: {family.k8s} listed twice")
        else:
            families.append(family)
    return families


def _family_policy(spec: Mapping[str, object], problems: list[str]) -> IPFamilyPolicy | None:
    raw = spec.get("ipFamilyPolicy")
    if raw is None:
        return None
    try:
        return IPFamilyPolicy(str(raw))
    except ValueError:
        problems.append(f"spec.ipFamilyPolicy: {_q(str(raw))} is not a known policy")
        return None


def _ports(spec: Mapping[str, object], problems: list[str]) -> tuple[ServicePort, ...]:
    ports: set[ServicePort] = set()
    for i, entry in enumerate(_list(spec, "ports")):
        protocol = entry.get("protocol") if isinstance(entry, Mapping) else None
        port = entry.get("port") if isinstance(entry, Mapping) else None
        protocol = "TCP" if protocol is None else protocol
        if protocol not in PROTOCOLS:
            problems.append(
                f"spec.ports[{i}].protocol: {_q(str(protocol))} is not TCP, UDP or SCTP"
            )
        elif not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            problems.append(f"spec.ports[{i}].port: {_q(str(port))} is not a port number")
        else:
            ports.add(ServicePort(str(protocol), port))
    return tuple(sorted(ports))


def _traffic_policy(spec: Mapping[str, object], problems: list[str]) -> TrafficPolicy:
    raw = spec.get("externalTrafficPolicy")
    if raw is None:
        return TrafficPolicy.CLUSTER
    try:
        return TrafficPolicy(str(raw))
    except ValueError:
        problems.append(f"spec.externalTrafficPolicy: {_q(str(raw))} is not Cluster or Local")
        return TrafficPolicy.CLUSTER
