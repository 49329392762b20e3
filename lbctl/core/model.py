"""The domain model shared by controller, speaker and CLI: pools, advertisements, peers, requests.

Everything here is a frozen value. Parsers (lbctl.core.parse*) build Config; lbctl.core.adapt builds
ServiceRequest from API bodies; the allocator and planners only ever see these types.
"""

from __future__ import annotations

import enum
import ipaddress
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PoolName = NewType("PoolName", str)
ServiceKey = NewType("ServiceKey", str)  # "namespace/name"
NodeName = NewType("NodeName", str)
PeerName = NewType("PeerName", str)


def service_key(namespace: str, name: str) -> ServiceKey:
    # Interned: the same key is stored by the allocator, the reconciler and the Event memory.
    return ServiceKey(sys.intern(f"{namespace}/{name}"))


class Family(enum.IntEnum):
    """An IP family, valued by its IP version so `Family(ip.version)` works."""

    V4 = 4
    V6 = 6

    @property
    def k8s(self) -> str:
        """The name Kubernetes uses in spec.ipFamilies."""
        return "IPv4" if self is Family.V4 else "IPv6"

    @property
    def max_prefix(self) -> int:
        return 32 if self is Family.V4 else 128


def family_of(ip: IPAddress) -> Family:
    return Family(ip.version)


@dataclass(frozen=True, order=True, slots=True)
class AddressRange:
    """An inclusive range of addresses of one family, as written (`text`) by the user."""

    first: IPAddress
    last: IPAddress
    text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise ValueError(f"range {self.text!r} mixes IP families")
        if int(self.first) > int(self.last):
            raise ValueError(f"range {self.text!r}: start after end")

    @property
    def family(self) -> Family:
        return Family(self.first.version)

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return ip.version == self.first.version and int(self.first) <= int(ip) <= int(self.last)

    def overlaps(self, other: AddressRange) -> bool:
        return (
            self.family == other.family
            and int(self.first) <= int(other.last)
            and int(other.first) <= int(self.last)
        )


class SelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case SelectorOperator.IN:
                return labels.get(self.key) in self.values
            case SelectorOperator.NOT_IN:
                return labels.get(self.key) not in self.values
            case SelectorOperator.EXISTS:
                return self.key in labels
            case SelectorOperator.DOES_NOT_EXIST:
                return self.key not in labels


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            req.matches(labels) for req in self.match_expressions
        )


def any_selector_matches(selectors: tuple[LabelSelector, ...], labels: Mapping[str, str]) -> bool:
    """A list of selectors is an OR; the empty list matches everything (MetalLB's rule)."""
    return not selectors or any(sel.matches(labels) for sel in selectors)


@dataclass(frozen=True, slots=True)
class AllocationScope:
    """Which Services may take addresses from a pool (MetalLB's serviceAllocation).

    Each non-empty criterion must hold; within one criterion the entries are an OR.
    A lower `priority` is tried first; scoped pools come before unscoped ones.
    """

    priority: int = 0
    namespaces: tuple[str, ...] = ()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True, slots=True)
class Pool:
    name: PoolName
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    # Skip addresses ending in .0 and .255 (old client stacks mistake them for broadcast).
    avoid_buggy_ips: bool = False
    scope: AllocationScope | None = None

    def families(self) -> frozenset[Family]:
        return frozenset(r.family for r in self.ranges)

    def size(self, family: Family) -> int:
        """Usable addresses of one family (buggy .0/.255 excluded when asked)."""
        return sum(
            range_usable_size(r, self.avoid_buggy_ips) for r in self.ranges if r.family == family
        )

    def contains(self, ip: IPAddress) -> bool:
        if any(ip in r for r in self.ranges):
            return not (self.avoid_buggy_ips and is_buggy(ip))
        return False


def is_buggy(ip: IPAddress) -> bool:
    """An IPv4 address ending in .0 or .255 (MetalLB's avoid-buggy-ips rule); IPv6 never is."""
    return ip.version == 4 and int(ip) & 0xFF in (0, 0xFF)


def range_usable_size(r: AddressRange, avoid_buggy: bool) -> int:
    """Addresses in r, minus .0/.255 ones when avoid_buggy: O(1), no enumeration."""
    if not avoid_buggy or r.family is Family.V6:
        return r.size
    lo, hi = int(r.first), int(r.last)

    def buggy_upto(n: int) -> int:  # buggy addresses in [0, n]
        if n < 0:
            return 0
        full, rest = divmod(n + 1, 256)
        return 2 * full + (1 if rest >= 1 else 0)  # .255 only counted in full blocks

    return r.size - (buggy_upto(hi) - buggy_upto(lo - 1))


class CommunityKind(enum.StrEnum):
    STANDARD = "standard"  # RFC 1997, "A:B" with 16-bit halves
    LARGE = "large"  # RFC 8092, "A:B:C" with 32-bit parts


@dataclass(frozen=True, order=True, slots=True)
class Community:
    kind: CommunityKind
    parts: tuple[int, ...]

    def __str__(self) -> str:
        text = ":".join(str(p) for p in self.parts)
        return f"large:{text}" if self.kind is CommunityKind.LARGE else text


@dataclass(frozen=True, slots=True)
class L2Advertisement:
    name: str
    pools: tuple[PoolName, ...] = ()  # empty: every pool
    node_selectors: tuple[LabelSelector, ...] = ()  # empty: every node
    interfaces: tuple[str, ...] = ()  # empty: the interface whose subnet holds the VIP


@dataclass(frozen=True, slots=True)
class BGPAdvertisement:
    name: str
    pools: tuple[PoolName, ...] = ()  # empty: every pool
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int | None = None
    communities: tuple[Community, ...] = ()
    peers: tuple[PeerName, ...] = ()  # empty: every peer
    node_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretRef:
    namespace: str
    name: str
    key: str = "password"


class Secret(str):
    """A string that never shows itself: repr/str/format give a redaction marker."""

    REDACTED = "<redacted>"

    def reveal(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Secret({self.REDACTED!r})"

    def __str__(self) -> str:
        return self.REDACTED

    def __format__(self, spec: str) -> str:
        return self.REDACTED


@dataclass(frozen=True, slots=True)
class BGPPeer:
    name: PeerName
    my_asn: int
    peer_asn: int
    address: IPAddress
    port: int = 179
    hold_time: float = 90.0  # seconds; 0 disables keepalives, else >= 3 (RFC 4271)
    keepalive_time: float | None = None  # None: hold_time / 3
    router_id: ipaddress.IPv4Address | None = None
    source_address: IPAddress | None = None
    ebgp_multihop: bool = False
    node_selectors: tuple[LabelSelector, ...] = ()
    password: Secret | None = None  # inline (MetalLB legacy format only)
    password_secret: SecretRef | None = None
    bfd_profile: str | None = None

    @property
    def is_ibgp(self) -> bool:
        return self.my_asn == self.peer_asn


@dataclass(frozen=True, slots=True)
class BFDProfile:
    """Validated and kept so users see it was read; ExaBGP has no BFD, so it is not used."""

    name: str
    receive_interval_ms: int = 300
    transmit_interval_ms: int = 300
    detect_multiplier: int = 3
    echo_interval_ms: int = 50
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: int = 254


class ConfigFormat(enum.StrEnum):
    LBCTL = "lbctl"
    METALLB = "metallb"


@dataclass(frozen=True, slots=True)
class Config:
    pools: tuple[Pool, ...] = ()
    l2_advertisements: tuple[L2Advertisement, ...] = ()
    bgp_advertisements: tuple[BGPAdvertisement, ...] = ()
    peers: tuple[BGPPeer, ...] = ()
    bfd_profiles: tuple[BFDProfile, ...] = ()
    # A config that would move an assigned IP is rejected unless this says renumbering is wanted.
    allow_renumber: bool = False
    source_format: ConfigFormat = ConfigFormat.LBCTL

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True, slots=True)
class ConfigIssue:
    """One finding, naming the object and the field: `pool "public": addresses[1]: ...`."""

    where: str  # object and field path, e.g. 'pool "public": addresses[1]'
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{prefix}{self.where}: {self.message}" if self.where else f"{prefix}{self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; carries every error found, not just the first."""

    def __init__(self, issues: tuple[ConfigIssue, ...] | list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True, slots=True)
class ParsedConfig:
    """A valid config plus the warnings found while reading it."""

    config: Config
    warnings: tuple[ConfigIssue, ...] = ()


# --- Services, as the allocator sees them -------------------------------------------------------


class IPFamilyPolicy(enum.StrEnum):
    SINGLE_STACK = "SingleStack"
    PREFER_DUAL_STACK = "PreferDualStack"
    REQUIRE_DUAL_STACK = "RequireDualStack"


class TrafficPolicy(enum.StrEnum):
    CLUSTER = "Cluster"
    LOCAL = "Local"


@dataclass(frozen=True, order=True, slots=True)
class ServicePort:
    protocol: str  # TCP, UDP, SCTP
    port: int


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """What one LoadBalancer Service asks of the allocator, read once from its body."""

    key: ServiceKey
    families: tuple[Family, ...] = (Family.V4,)  # spec.ipFamilies, primary first
    family_policy: IPFamilyPolicy = IPFamilyPolicy.SINGLE_STACK
    # spec.loadBalancerIP or the loadBalancerIPs annotation
    requested_ips: tuple[IPAddress, ...] = ()
    pool: PoolName | None = None  # the address-pool annotation
    sharing_key: str | None = None  # the allow-shared-ip annotation
    ports: tuple[ServicePort, ...] = ()
    traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    # Canonical selector text: with ETP Local, Services sharing an IP must select the same pods.
    selector: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    namespace_labels: tuple[tuple[str, str], ...] = ()
    lb_class: str | None = None
    # metadata.creationTimestamp (RFC 3339 sorts as text); orders pending requests, oldest first
    created: str = ""

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def backend_key(self) -> tuple[tuple[str, str], ...] | None:
        """Sharing needs equal backend keys: the selector for Local, nothing for Cluster."""
        return self.selector if self.traffic_policy is TrafficPolicy.LOCAL else None
