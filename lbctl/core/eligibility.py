"""The rules both announcement planners share (L2: lbctl.core.l2plan, BGP: lbctl.core.bgpplan):
which nodes may announce anything, which pool an IP belongs to, and which Services have
endpoints to send traffic to, cluster-wide and per node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from lbctl.core.adapt import EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.model import Config, IPAddress, NodeName, PoolName
from lbctl.core.reasons import NodeSkip

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def empty_mapping() -> Mapping[Any, Any]:
    """A read-only empty mapping: the default of the plans' per-node fields. One shared
    instance: a plan holds one per Service and group (~0.2 KiB each when each had its own)."""
    return _EMPTY


def node_skip(node: NodeInfo) -> NodeSkip | None:
    """Why a node may announce nothing at all, whatever the pool (NodeSkip order); None if it may.

    Deliberate signals come first: an out-of-service node is usually NotReady too, and saying
    so names the cause. Cordoned nodes stay eligible: kube-proxy still forwards there, and a
    drain moves externalTrafficPolicy Local IPs through their endpoints.
    """
    checks = (
        (node.excluded, NodeSkip.NODE_EXCLUDED),
        (node.out_of_service, NodeSkip.NODE_OUT_OF_SERVICE),
        (node.network_unavailable, NodeSkip.NODE_NETWORK_UNAVAILABLE),
        (node.unreachable, NodeSkip.NODE_UNREACHABLE),
        (not node.ready, NodeSkip.NODE_NOT_READY),
    )
    return next((reason for failed, reason in checks if failed), None)


def pool_of(config: Config, service: HeldService, ip: IPAddress) -> PoolName | None:
    """The pool whose ranges hold `ip` (ranges never overlap, so there is at most one; MetalLB's
    speaker also goes by the address), else the Service's allocated-from-pool annotation when it
    names a configured pool (IPs the controller kept outside every pool)."""
    holder = next((p.name for p in config.pools if any(ip in r for r in p.ranges)), None)
    if holder is not None:
        return holder
    named = service.allocated_pool
    return named if named is not None and config.pool(named) is not None else None


def serves(slices: Sequence[EndpointSliceInfo]) -> bool:
    """A ready endpoint anywhere, or failing that a serving (terminating) one: kube-proxy still
    sends to those when nothing is ready (KEP-1669)."""
    return any(e.ready or e.serving for s in slices for e in s.endpoints)


def local_nodes(slices: Sequence[EndpointSliceInfo], candidates: set[NodeName]) -> set[NodeName]:
    """For externalTrafficPolicy Local: the candidates with a ready local endpoint; if none has
    one, those with a serving one (kube-proxy's own fallback), so a draining node gives the IP up
    as soon as another has a ready pod."""
    ready = {n for s in slices for n in s.nodes_with() if n in candidates}
    if ready:
        return ready
    return {n for s in slices for n in s.nodes_with(serving=True) if n in candidates}
