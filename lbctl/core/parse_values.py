"""Pure helpers for the config parsers (value parsers, field paths); used via parse_common.

Each value parser raises ValueError whose text is the message to record (it starts with the quoted
value).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping

from lbctl.core.model import AddressRange, Community, CommunityKind, IPAddress

ASN_MAX = 4_294_967_295  # 32-bit ASNs (RFC 6793); 0 is reserved (RFC 7607)
UINT32_MAX = 4_294_967_295
UINT16_MAX = 65_535


def quote(text: str) -> str:
    """A value as it appears in messages: double-quoted, control characters escaped."""
    return json.dumps(text, ensure_ascii=False)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def at(where: str, key: str | int) -> str:
    """Extend a field path: 'pool "a"' + 'addresses' -> 'pool "a": addresses'; + 1 -> '...[1]'.

    After an object name (ending in a quote) a field follows ': '; after a field, a '.'. A key
    that is not a plain word is quoted: 'pool "a": "odd key"', 'bgp-communities["my alias"]'.
    Mapping keys that are not strings (YAML allows them) are passed as key_text(key).
    """
    if isinstance(key, int):
        return f"{where}[{key}]"
    if not _PLAIN_KEY.fullmatch(key):
        if where and not where.endswith('"'):
            return f"{where}[{quote(key)}]"
        key = quote(key)
    if not where:
        return key
    return f"{where}: {key}" if where.endswith('"') else f"{where}.{key}"


def key_text(key: object) -> str:
    """A mapping key as text for `at` (YAML keys may be ints, bools, null...)."""
    return key if isinstance(key, str) else repr(key)


def object_where(kind: str, name: object, fallback: str) -> str:
    """'pool "public"' when the object has a usable name, else its position ('address-pools[2]')."""
    if isinstance(name, str) and name and name.isprintable():
        return f"{kind} {quote(name)}"
    return fallback


def type_name(value: object) -> str:
    """'a string', 'a list', ...: how a YAML value's type is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address, no zone index, no surrounding space."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{quote(text)}: not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"{quote(text)}: zone index not allowed")
    return ip


def parse_address_range(text: str) -> tuple[AddressRange, str | None]:
    """A pool entry -> (range, warning or None): a CIDR, 'a-b' (spaces trimmed), or one IP.

    A CIDR with host bits set means its network (MetalLB's net.ParseCIDR does the same); that is
    returned as a warning, since it usually hides a typo.
    """
    body = text.strip()
    if "-" in body:
        parts = body.split("-")
        if len(parts) != 2:
            raise ValueError(f"{quote(text)}: not a CIDR, range or IP address")
        try:
            first, last = parse_ip(parts[0].strip()), parse_ip(parts[1].strip())
        except ValueError:
            raise ValueError(f"{quote(text)}: not an IP address range") from None
        if first.version != last.version:
            raise ValueError(f"{quote(text)}: mixes IPv4 and IPv6")
        if int(first) > int(last):
            raise ValueError(f"{quote(text)}: start after end")
        return AddressRange(first, last, text), None
    if "/" in body:
        try:
            net = ipaddress.ip_network(body, strict=False)
        except ValueError:
            raise ValueError(f"{quote(text)}: not a valid CIDR") from None
        if "%" in body:
            raise ValueError(f"{quote(text)}: zone index not allowed")
        warning = None
        if str(net) != body and int(ipaddress.ip_interface(body).ip) != int(net.network_address):
            warning = f"{quote(text)}: host bits set; this means {net}"
        return AddressRange(net.network_address, net.broadcast_address, text), warning
    try:
        ipaddress.ip_address(body)
    except ValueError:
        raise ValueError(f"{quote(text)}: not a CIDR, range or IP address") from None
    ip = parse_ip(body)  # rejects a zone index
    return AddressRange(ip, ip, text), None


def cidr_prefix_len(r: AddressRange) -> int | None:
    """The prefix length if the entry was written as a CIDR, else None (ranges, single IPs)."""
    if "/" not in r.text:
        return None
    return ipaddress.ip_network(r.text.strip(), strict=False).prefixlen


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0}
_DURATION_UNIT |= {"m": 60.0, "h": 3600.0}
_DURATION_MAX = 9.2e9  # seconds: Go's time.Duration is int64 nanoseconds (~292 years)


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration without a sign ('90s', '1m30s', '1.5h', '0') -> seconds."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f'{quote(text)}: not a duration like "90s" or "1m30s"')
        total += float(m.group(1)) * _DURATION_UNIT[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f'{quote(text)}: not a duration like "90s" or "1m30s"')
    if total > _DURATION_MAX:
        raise ValueError(f"{quote(text)}: duration out of range")
    return total


def format_duration(seconds: float) -> str:
    """'90s', '1.5s': for messages."""
    return f"{seconds:g}s"


_COMMUNITY_PART = re.compile(r"[0-9]{1,10}")


def parse_community(text: str, *, allow_large: bool = True) -> Community:
    """'A:B' (RFC 1997, 16-bit halves) or 'A:B:C' / 'large:A:B:C' (RFC 8092, 32-bit parts)."""
    body = text.removeprefix("large:")
    parts = body.split(":")
    large = len(parts) == 3 or body != text
    if len(parts) not in (2, 3) or (body != text and len(parts) != 3):
        raise ValueError(f'{quote(text)}: not a community ("A:B" or "large:A:B:C") or alias')
    if large and not allow_large:
        raise ValueError(f"{quote(text)}: large communities are not supported in this format")
    limit = UINT32_MAX if large else UINT16_MAX
    values: list[int] = []
    for part in parts:
        if not _COMMUNITY_PART.fullmatch(part):
            raise ValueError(f"{quote(text)}: {quote(part)} is not a number")
        if int(part) > limit:
            raise ValueError(f"{quote(text)}: {part} is out of range 0..{limit}")
        values.append(int(part))
    kind = CommunityKind.LARGE if large else CommunityKind.STANDARD
    return Community(kind, tuple(values))


_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_label_key(key: str) -> None:
    """Kubernetes' qualified name: optional DNS-subdomain prefix '/', then a 63-char name."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"{quote(key)}: not a valid label key (bad prefix)")
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"{quote(key)}: not a valid label key")


def check_label_value(value: str) -> None:
    if value and not _LABEL_NAME.fullmatch(value):
        raise ValueError(f"{quote(value)}: not a valid label value")
