"""Annotation, label and taint keys lbctl reads and writes, in one place; for adapt and the shells.

Services are read under lbctl's prefix and both MetalLB prefixes, so a cluster can move from MetalLB
to lbctl without touching its Services; lbctl only ever writes under its own prefix.
"""

from __future__ import annotations

LBCTL_PREFIX = "lbctl.io/"
METALLB_PREFIX = "metallb.io/"
METALLB_LEGACY_PREFIX = "metallb.universe.tf/"  # deprecated by MetalLB, still widely deployed
# Read order: the first prefix present wins where only one value is wanted (allocated_pool).
READ_PREFIXES = (LBCTL_PREFIX, METALLB_PREFIX, METALLB_LEGACY_PREFIX)

# Names under each prefix.
ADDRESS_POOL = "address-pool"
LOAD_BALANCER_IPS = "loadBalancerIPs"
ALLOW_SHARED_IP = "allow-shared-ip"
IP_ALLOCATED_FROM_POOL = "ip-allocated-from-pool"

# What the controller writes on a Service it gave an address to.
ALLOCATED_FROM_POOL = LBCTL_PREFIX + IP_ALLOCATED_FROM_POOL

# Well-known Kubernetes keys.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # on EndpointSlices
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
# Set by the node lifecycle controller when the Node Ready condition is Unknown (kubelet silent).
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def keys_for(name: str) -> tuple[str, ...]:
    """The full annotation keys under which `name` is read, in READ_PREFIXES order."""
    return tuple(prefix + name for prefix in READ_PREFIXES)
