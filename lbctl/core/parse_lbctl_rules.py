"""lbctl's format: its key schema and the value rules only it has; used by the parse_lbctl* modules.

The key tuples here are the single source of truth: the readers reject any other key, and the
tests check that docs/configuration.md documents and the error corpus exercises every one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from lbctl.core.parse_common import Issues, Tree, at, object_where, quote

API_VERSION = "lbctl.io/v1alpha1"
KIND = "Config"
# Where a passwordSecret without a namespace is looked up: the namespace lbctl runs in.
DEFAULT_SECRET_NAMESPACE = "lbctl-system"
DEFAULT_SECRET_KEY = "password"

TOP_KEYS = (
    "apiVersion",
    "kind",
    "allowRenumber",
    "pools",
    "communities",
    "l2Advertisements",
    "bgpAdvertisements",
    "bgpPeers",
)
POOL_KEYS = ("name", "addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation")
ALLOCATION_KEYS = ("priority", "namespaces", "namespaceSelectors", "serviceSelectors")
L2_KEYS = ("name", "pools", "nodeSelectors", "interfaces")
BGP_ADV_KEYS = (
    "name",
    "pools",
    "aggregationLength",
    "aggregationLengthV6",
    "localPref",
    "communities",
    "peers",
    "nodeSelectors",
)
PEER_KEYS = (
    "name",
    "myASN",
    "peerASN",
    "address",
    "port",
    "holdTime",
    "keepaliveTime",
    "routerID",
    "sourceAddress",
    "ebgpMultiHop",
    "nodeSelectors",
    "passwordSecret",
)
SECRET_KEYS = ("name", "namespace", "key")
SELECTOR_KEYS = ("matchLabels", "matchExpressions")
REQUIREMENT_KEYS = ("key", "operator", "values")

_SELECTOR_LISTS = (
    "pools[].serviceAllocation.namespaceSelectors",
    "pools[].serviceAllocation.serviceSelectors",
    "l2Advertisements[].nodeSelectors",
    "bgpAdvertisements[].nodeSelectors",
    "bgpPeers[].nodeSelectors",
)

# Path of every mapping in the format ('' is the document, '[]' a list entry) -> its keys.
SCHEMA: dict[str, tuple[str, ...]] = {
    "": TOP_KEYS,
    "pools[]": POOL_KEYS,
    "pools[].serviceAllocation": ALLOCATION_KEYS,
    "l2Advertisements[]": L2_KEYS,
    "bgpAdvertisements[]": BGP_ADV_KEYS,
    "bgpPeers[]": PEER_KEYS,
    "bgpPeers[].passwordSecret": SECRET_KEYS,
}
for _place in _SELECTOR_LISTS:
    SCHEMA[f"{_place}[]"] = SELECTOR_KEYS
    SCHEMA[f"{_place}[].matchExpressions[]"] = REQUIREMENT_KEYS

# Mappings whose keys the user chooses (community aliases, label keys).
FREE_MAPS = ("communities", *(f"{place}[].matchLabels" for place in _SELECTOR_LISTS))


def key_paths() -> tuple[str, ...]:
    """Every key of the format as a path ('pools[].serviceAllocation.priority'; '.*' = any key)."""
    paths = [
        f"{parent}.{key}" if parent else key for parent, keys in SCHEMA.items() for key in keys
    ]
    return (*paths, *(f"{free}.*" for free in FREE_MAPS))


# MetalLB's CRD field names that lbctl spells differently: a pointed hint beats "unknown".
METALLB_RENAMES = {"ipAddressPools": "pools", "peerAddress": "address", "peerPort": "port"}
INLINE_PASSWORD = "inline passwords are not allowed in lbctl's format; use passwordSecret"


def reject_unknown(issues: Issues, m: Tree, allowed: Collection[str], where: str) -> None:
    """parse_common's unknown-key check, plus hints for MetalLB's names and inline passwords."""
    special: Mapping[str, str] = {
        **{old: f'unknown field (lbctl calls it "{new}")' for old, new in METALLB_RENAMES.items()},
        "password": INLINE_PASSWORD if "passwordSecret" in allowed else "unknown field",
    }
    for key in m:
        if isinstance(key, str) and key in special and key not in allowed:
            issues.error(at(where, key), special[key])
    rest = {k: v for k, v in m.items() if not (isinstance(k, str) and k in special)}
    issues.reject_unknown(rest, allowed, where)


# Kubernetes object names (RFC 1123 subdomain) and namespace names (RFC 1123 label).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
NAME_RULE = "lowercase letters, digits, '-' and '.', at most 253 characters"
NAMESPACE_RULE = "lowercase letters, digits and '-', at most 63 characters"
IFNAME_RULE = "1-15 characters, no '/', ':' or whitespace"


def is_dns_subdomain(text: str) -> bool:
    return len(text) <= 253 and _DNS_SUBDOMAIN.fullmatch(text) is not None


def check_text(issues: Issues, text: str, where: str, what: str) -> bool:
    """One of lbctl's text rules; `what` is one of 'name', 'namespace name', 'interface name',
    'Secret key'."""
    ok, rule = {
        "name": (is_dns_subdomain(text), NAME_RULE),
        "namespace name": (_DNS_LABEL.fullmatch(text) is not None, NAMESPACE_RULE),
        "interface name": (is_ifname(text), IFNAME_RULE),
        "Secret key": (_SECRET_KEY.fullmatch(text) is not None, "letters, digits, '-', '_', '.'"),
    }[what]
    if not ok:
        issues.error(where, f"{quote(text)}: not a valid {what} ({rule})")
    return ok


def is_ifname(text: str) -> bool:
    """Linux's dev_valid_name: 1..IFNAMSIZ-1 bytes, not '.'/'..', no '/', ':' or whitespace."""
    return (
        0 < len(text.encode()) <= 15
        and text not in (".", "..")
        and text.isprintable()
        and not any(c in "/:" or c.isspace() for c in text)
    )


def read_name(issues: Issues, entry: Tree, pos: str, kind: str) -> tuple[str | None, str]:
    """An entry's name and how messages name the entry: ('public', 'pool "public"').

    An entry without a valid name is named by its position ('pools[2]').
    """
    name = issues.get_name(entry, "name", pos)
    if name is not None and not check_text(issues, name, at(pos, "name"), "name"):
        name = None
    return name, object_where(kind, name, pos)
