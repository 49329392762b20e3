"""Label and field selectors as the API server parses and applies them; used by the store."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lbctl.lab.api.errors import ApiError

Body = dict[str, Any]

_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^\s!=<>]+)\s*(==|!=|=|<|>)\s*(\S*)\s*$")
_KEY_RE = re.compile(
    r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: key, operator, values."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "<", ">"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if not has or value is None:
            return False
        try:
            left, right = int(value), int(self.values[0])
        except ValueError:
            return False
        return left < right if self.op == "<" else left > right


def _split_top(text: str) -> list[str]:
    """Split at commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, selector: str) -> str:
    if not _KEY_RE.match(key):
        raise ApiError(
            400, f"unable to parse requirement: invalid label key {key!r} in {selector!r}"
        )
    return key


def parse_label_selector(selector: str | None) -> tuple[Requirement, ...]:
    """Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k`; bad syntax is a 400 like the real server."""
    if not selector:
        return ()
    reqs = []
    for term in _split_top(selector):
        if m := _SET_RE.match(term):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(_check_key(m.group(1), selector), m.group(2), values))
        elif m := _CMP_RE.match(term):
            op = "=" if m.group(2) == "==" else m.group(2)
            reqs.append(Requirement(_check_key(m.group(1), selector), op, (m.group(3),)))
        elif term.startswith("!"):
            reqs.append(Requirement(_check_key(term[1:].strip(), selector), "!"))
        else:
            reqs.append(Requirement(_check_key(term, selector), "exists"))
    return tuple(reqs)


def match_labels(reqs: tuple[Requirement, ...], obj: Body) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


@dataclass(frozen=True)
class FieldTerm:
    path: str
    negate: bool
    value: str


COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


def parse_field_selector(selector: str | None, allowed: frozenset[str]) -> tuple[FieldTerm, ...]:
    """Parse `metadata.name=x,involvedObject.kind!=Pod`; unknown fields are a 400."""
    if not selector:
        return ()
    terms = []
    for part in _split_top(selector):
        m = re.match(r"^([^=!]+)(==|!=|=)(.*)$", part)
        if not m:
            raise ApiError(400, f"invalid selector: {selector!r}; can't understand {part!r}")
        path = m.group(1).strip()
        if path not in allowed and path not in COMMON_FIELDS:
            raise ApiError(400, f'field label not supported: "{path}"')
        terms.append(FieldTerm(path, m.group(2) == "!=", m.group(3).strip()))
    return tuple(terms)


def field_value(obj: Body, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if path == "source" and isinstance(node, dict):
        return str(node.get("component", ""))
    return node if isinstance(node, str) else str(node)


def match_fields(terms: tuple[FieldTerm, ...], obj: Body) -> bool:
    return all((field_value(obj, t.path) == t.value) != t.negate for t in terms)


def make_filter(
    label_selector: str | None, field_selector: str | None, allowed: frozenset[str]
) -> Callable[[Body], bool]:
    """One predicate for both selectors, parsed once (so errors surface before streaming)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, allowed)
    return lambda obj: match_labels(labels, obj) and match_fields(fields, obj)
