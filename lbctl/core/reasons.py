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
    RENUMBERED = "Renumbered"  # an allowed renumbering config moved this Service


class AllocSuccess(enum.StrEnum):
    ALLOCATED = "Allocated"
    RESTORED = "Restored"
