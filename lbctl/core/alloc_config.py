"""Config changes in lbctl.core.allocator: which Services a new config would displace, and why not.

A new config is rejected when an address that lies in a pool now would lie in none under it
(MetalLB <= 0.12's rule: a typo in a pool edit must never renumber production Services); an
address merely moving to another pool is fine. Sharing compatibility depends on the Services only,
never on the config, so a config change cannot make two existing assignments conflict.
"""

from __future__ import annotations

from collections.abc import Mapping

from lbctl.core.alloc_pools import PoolTable
from lbctl.core.alloc_types import ConfigChange, Holding
from lbctl.core.model import IPAddress, ServiceKey
from lbctl.core.reasons import AllocFailure


def displaced_services(
    held: Mapping[int, Holding], table: PoolTable
) -> dict[ServiceKey, list[IPAddress]]:
    """Services with an address that is in a pool now but would be in none under table."""
    displaced: dict[ServiceKey, list[IPAddress]] = {}
    for akey in sorted(held):
        h = held[akey]
        if h.pool is not None and table.pool_of(h.family, h.n) is None:
            for key in sorted(h.holders):
                displaced.setdefault(key, []).append(h.ip)
    return dict(sorted(displaced.items()))


def rejection(displaced: dict[ServiceKey, list[IPAddress]]) -> ConfigChange:
    shown = [f"{k} ({', '.join(map(str, ips))})" for k, ips in list(displaced.items())[:10]]
    more = f" and {len(displaced) - 10} more" if len(displaced) > 10 else ""
    message = (
        "config rejected: assigned addresses would leave every pool: "
        + "; ".join(shown)
        + more
        + " (set allowRenumber to move them)"
    )
    return ConfigChange(
        accepted=False,
        reason=AllocFailure.CONFIG_INVALID,
        message=message,
        blocked=tuple(displaced),
    )
