"""Values lbctl.core.allocator hands its caller (the controller's reconciler), and its holdings."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbctl.core.model import Family, IPAddress, PoolName, ServiceKey, ServiceRequest
from lbctl.core.reasons import AllocFailure, AllocSuccess

# IPv4 and IPv6 addresses share one int key space: IPv6 keys carry this bit (::1 is not 0.0.0.1).
V6_TAG = 1 << 128


def addr_key(ip: IPAddress) -> int:
    return int(ip) if ip.version == 4 else int(ip) | V6_TAG


def akey_of(family: Family, n: int) -> int:
    return n if family is Family.V4 else n | V6_TAG


@dataclass(frozen=True, slots=True)
class Assignment:
    """The addresses a Service holds, primary family first, and the pool they come from."""

    key: ServiceKey
    ips: tuple[IPAddress, ...]
    pool: PoolName | None  # None only for a restored Service whose IPs lie in no pool
    reason: AllocSuccess = AllocSuccess.ALLOCATED  # RESTORED / RENUMBERED
    # Restored IPs that lie in no pool of the config in force: kept (never given to anyone else).
    orphaned: tuple[IPAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a Service has no address; the message carries the numbers (`4/4 used`)."""

    key: ServiceKey
    reason: AllocFailure
    message: str


Result = Assignment | Failure


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """The outcome of Allocator.update_config.

    Rejected: `accepted` is False, `reason` is CONFIG_INVALID, `blocked` names the Services whose
    IPs would leave every pool, and the old config stays in force. Accepted: `renumbered` holds the
    new result of every Service moved (only with allow_renumber; Assignment.reason RENUMBERED, or a
    Failure), `repooled` the Services whose IPs stay but now belong to another pool, and `woken`
    the pending requests the new config satisfies.
    """

    accepted: bool
    reason: AllocFailure | None = None
    message: str = ""
    blocked: tuple[ServiceKey, ...] = ()
    renumbered: tuple[Result, ...] = ()
    repooled: tuple[Assignment, ...] = ()
    woken: tuple[Assignment, ...] = ()


@dataclass
class AllocatorStats:
    """Counters that prove the cost rules (tests and bench read them)."""

    # Pending requests retried because an IP they could use was freed or became shareable.
    reexamined: int = 0
    # Pending requests retried because a new config was accepted.
    retried_on_config: int = 0


@dataclass(eq=False, slots=True)
class Holding:
    """One held address and the Services holding it (several only when sharing)."""

    ip: IPAddress
    n: int  # int(ip)
    family: Family
    pool: PoolName | None  # the pool holding it under the config in force; None: in no pool
    holders: dict[ServiceKey, ServiceRequest] = field(default_factory=dict)

    @property
    def akey(self) -> int:
        return akey_of(self.family, self.n)

    def shareable_by(self, req: ServiceRequest) -> bool:
        """Cheap pre-check: could req possibly join (same non-empty sharing key as every holder)?"""
        key = req.sharing_key
        return bool(key) and all(
            h.sharing_key == key for k, h in self.holders.items() if k != req.key
        )
