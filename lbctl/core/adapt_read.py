"""Typed readers over untrusted API bodies (raw JSON mappings): a wrong type reads as empty, never
raises. Shared by lbctl.core.adapt (Services) and lbctl.core.adapt_nodes (Nodes, EndpointSlices).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from lbctl.core.model import IPAddress
from lbctl.core.timefmt import rfc3339


def mapping(obj: object, key: str) -> Mapping[str, object]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def items(obj: object, key: str) -> list[object]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return list(value) if isinstance(value, list | tuple) else []


def text(obj: object, key: str) -> str | None:
    """A non-empty string field, else None."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, str) and value else None


def pairs(obj: object) -> tuple[tuple[str, str], ...]:
    """A string-to-string mapping as a sorted tuple; entries that are not strings are dropped."""
    if not isinstance(obj, Mapping):
        return ()
    return tuple(
        sorted((k, v) for k, v in obj.items() if isinstance(k, str) and isinstance(v, str))
    )


def quoted(text: str) -> str:
    """Quote user text for a message: double quotes, control characters escaped."""
    return json.dumps(text)


def ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def timestamp(value: object) -> str:
    """metadata.creationTimestamp as RFC 3339 text (the client's to_dict() gives a datetime)."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return rfc3339(aware)
    return ""
