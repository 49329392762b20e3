"""Reasons, not booleans: every "no" the core can give, as one enum per decision.

Values are the CamelCase words that appear in status.conditions reasons, Events and metrics labels,
so controller and CLI can pass them through unchanged.
"""

from __future__ import annotations

import enum


class AllocFailure(enum.StrEnum):
    """Why a Service has no address (the `lbctl.io/IPAllocated` condition's reason when False)."""

    NO_POOL_MATCHES = "NoPoolMatches"  # no pool this Service may use holds its families
    POOL_EXHAUSTED = "PoolExhausted"  # the pools it may use are full
    UNKNOWN_POOL = "UnknownPool"  # the address-pool annotation names no pool
    REQUESTED_IP_UNAVAILABLE = "RequestedIPUnavailable"  # taken, outside every usable pool
    SHARING_CONFLICT = "SharingConflict"  # sharing key, ports or backend key disagree
    FAMILY_UNAVAILABLE = "FamilyUnavailable"  # RequireDualStack without a dual-stack pool
    INVALID_ANNOTATION = "InvalidAnnotation"  # unreadable or contradictory annotations/spec
    CONFIG_INVALID = "ConfigInvalid"  # no valid config in force
    CLASS_MISMATCH = "ClassMismatch"  # loadBalancerClass is not ours


class AllocSuccess(enum.StrEnum):
    """Why a Service holds its addresses (the `lbctl.io/IPAllocated` condition's reason when
    True); a distinct type, so an Assignment can never carry a failure reason."""

    ALLOCATED = "Allocated"
    RESTORED = "Restored"  # found in status at start-up, kept (also: in no pool of the config)
    RENUMBERED = "Renumbered"  # an allowed renumbering config moved this Service
    ANNOTATION_IGNORED = "AnnotationIgnored"  # kept its IPs; its new annotations are unreadable


class StartBlock(enum.StrEnum):
    """What keeps the controller from working at all (the metric
    `lbctl_controller_start_blocked{reason}` and /readyz say which)."""

    LEASE_NAMESPACE_MISSING = "LeaseNamespaceMissing"  # no namespace to hold its Lease
    CONFIG_MAP_MISSING = "ConfigMapMissing"  # the pool ConfigMap does not exist
    CONFIG_KEY_MISSING = "ConfigKeyMissing"  # neither data["config.yaml"] nor data["config"]
    CONFIG_INVALID = "ConfigInvalid"  # the only ConfigMap content seen does not load
    UNAUTHORIZED = "Unauthorized"  # HTTP 401: the API server does not accept its credentials
    FORBIDDEN = "Forbidden"  # HTTP 403: its identity lacks a rule it needs


class L2Failure(enum.StrEnum):
    """Why nobody announces a Service's IPs (the `lbctl.io/AnnouncedL2` condition's reason when
    False); checked in this order, so the first that holds is the one reported."""

    NO_L2_ADVERTISEMENT = "NoL2Advertisement"  # the IPs' pool has no L2 advertisement
    NO_READY_ENDPOINTS = "NoReadyEndpoints"  # no ready (or serving) endpoint anywhere
    NO_ELIGIBLE_NODE = "NoEligibleNode"  # every node is skipped (NodeSkip says why, per node)
    NO_INTERFACE_FOR_IP = "NoInterfaceForIP"  # the announcing node has no interface for the IPs


class L2Success(enum.StrEnum):
    ANNOUNCED = "Announced"


class NodeSkip(enum.StrEnum):
    """Why one node may not announce a group of IPs; the first that holds, in this order."""

    NODE_NOT_SELECTED = "NodeNotSelected"  # no advertisement of the pool selects it
    NODE_EXCLUDED = "NodeExcluded"  # labelled exclude-from-external-load-balancers
    NODE_OUT_OF_SERVICE = "NodeOutOfService"  # tainted node.kubernetes.io/out-of-service
    NODE_NETWORK_UNAVAILABLE = "NodeNetworkUnavailable"  # condition NetworkUnavailable=True
    NODE_UNREACHABLE = "NodeUnreachable"  # tainted node.kubernetes.io/unreachable
    NODE_NOT_READY = "NodeNotReady"  # condition Ready is False, Unknown or missing
    NO_LOCAL_ENDPOINT = "NoLocalEndpoint"  # externalTrafficPolicy Local, no ready endpoint here
    NO_BGP_PEER = "NoBGPPeer"  # BGP: no peer of the advertisements applies to it for the IPs


class BGPFailure(enum.StrEnum):
    """Why no node announces a Service's IPs over BGP (the `lbctl.io/AnnouncedBGP` condition's
    reason when False); checked in this order, so the first that holds is the one reported."""

    NO_BGP_ADVERTISEMENT = "NoBGPAdvertisement"  # the IPs' pool has no BGP advertisement
    NO_READY_ENDPOINTS = "NoReadyEndpoints"  # no ready (or serving) endpoint anywhere
    NO_ELIGIBLE_NODE = "NoEligibleNode"  # every node is skipped (NodeSkip says why, per node)
    NO_SESSION_ESTABLISHED = "NoSessionEstablished"  # routes planned, no session up to send them


class BGPSuccess(enum.StrEnum):
    ANNOUNCED = "Announced"
