"""Shared field readers and checks for the config parsers; called by parse_lbctl and parse_metallb.

Conventions every parser follows (so messages look alike whatever the format):
- `where` is an object then a field path: 'pool "public"', 'pool "public": addresses[1]',
  'address-pools[3].protocol'. Extend it with `at(where, key)`; never build it by hand.
- A message starts with the offending value when there is one (strings quoted with `quote`):
  'pool "public": addresses[1]: "10.0.0.9-10.0.0.3": start after end'. Wrong-type messages never
  repeat the value (it could be a password).
- YAML null means "not set" everywhere (as in MetalLB, whose Go structs read null as zero).
- Getters return None when the field is absent or wrong (the error is recorded), so a parser keeps
  going and reports every error at once; `Issues.finish` raises ConfigError carrying them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TypeVar

from lbctl.core.model import (
    AddressRange,
    Community,
    Config,
    ConfigError,
    ConfigIssue,
    IPAddress,
    LabelSelector,
    ParsedConfig,
    Severity,
)
from lbctl.core.parse_selectors import (
    CAMEL_KEYS,
    KEBAB_KEYS,
    SelectorKeys,
    match_labels,
    requirement,
)
from lbctl.core.parse_values import (
    ASN_MAX,
    UINT16_MAX,
    UINT32_MAX,
    at,
    check_label_key,
    check_label_value,
    cidr_prefix_len,
    format_duration,
    is_int,
    key_text,
    object_where,
    parse_address_range,
    parse_community,
    parse_duration,
    parse_ip,
    quote,
    type_name,
)

# The value parsers are re-exported: parsers import everything they need from this one module.
__all__ = [
    "ASN_MAX",
    "CAMEL_KEYS",
    "KEBAB_KEYS",
    "UINT16_MAX",
    "UINT32_MAX",
    "Issues",
    "SelectorKeys",
    "Tree",
    "at",
    "check_label_key",
    "check_label_value",
    "cidr_prefix_len",
    "format_duration",
    "is_int",
    "key_text",
    "object_where",
    "parse_address_range",
    "parse_community",
    "parse_duration",
    "parse_ip",
    "quote",
    "type_name",
]

Tree = Mapping[object, object]
T = TypeVar("T")


class Issues:
    """Collects errors and warnings while one document is parsed, and reads its fields.

    `prefix` names the source ('configmap ns/name: data["config"]') and is put before every
    `where`. Each get_* reads `mapping[key]`, records a wrong type or a bad value, and returns the
    value or None.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def _full(self, where: str) -> str:
        if self.prefix and where:
            return f"{self.prefix}: {where}"
        return self.prefix or where

    def error(self, where: str, msg: str) -> None:
        self.errors.append(ConfigIssue(self._full(where), msg, Severity.ERROR))

    def warn(self, where: str, msg: str) -> None:
        self.warnings.append(ConfigIssue(self._full(where), msg, Severity.WARNING))

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def finish(self, config: Config) -> ParsedConfig:
        """The result: ConfigError with every error if any, else the config and the warnings."""
        if self.errors:
            raise ConfigError(self.errors)
        return ParsedConfig(config, tuple(self.warnings))

    # --- shapes ---------------------------------------------------------------------------------

    def mapping(self, value: object, where: str) -> Tree | None:
        """The value if it is a mapping, else an error (a whole document, a list entry...)."""
        if isinstance(value, Mapping):
            return value
        self.error(where, f"must be a mapping, not {type_name(value)}")
        return None

    def reject_unknown(self, m: Tree, allowed: Collection[str], where: str) -> None:
        """Every key not in `allowed` is an error (with a did-you-mean when one is close)."""
        for key in m:
            if isinstance(key, str) and key in allowed:
                continue
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f" (did you mean {quote(close[0])}?)" if close else ""
            self.error(at(where, key_text(key)), f"unknown field{hint}")

    def _get(self, m: Tree, key: str, where: str, required: bool) -> object:
        value = m.get(key)
        if value is None and required:
            self.error(at(where, key), "is required")
        return value

    def _wrong(self, m: Tree, key: str, where: str, noun: str) -> None:
        self.error(at(where, key), f"must be {noun}, not {type_name(m.get(key))}")

    def get_map(self, m: Tree, key: str, where: str, *, required: bool = False) -> Tree | None:
        value = self._get(m, key, where, required)
        if value is None or isinstance(value, Mapping):
            return value
        self._wrong(m, key, where, "a mapping")
        return None

    def get_list(
        self, m: Tree, key: str, where: str, *, required: bool = False, nonempty: bool = False
    ) -> list[object] | None:
        value = self._get(m, key, where, required)
        if value is None:
            return None
        if not isinstance(value, list):
            self._wrong(m, key, where, "a list")
            return None
        if nonempty and not value:
            self.error(at(where, key), "must not be empty")
            return None
        return value

    def entries(
        self, m: Tree, key: str, where: str, *, required: bool = False
    ) -> list[tuple[str, Tree]]:
        """The mapping entries of list `key` as (where, entry); other entries are errors."""
        out: list[tuple[str, Tree]] = []
        for i, item in enumerate(self.get_list(m, key, where, required=required) or []):
            entry = self.mapping(item, at(at(where, key), i))
            if entry is not None:
                out.append((at(at(where, key), i), entry))
        return out

    def get_str(
        self, m: Tree, key: str, where: str, *, required: bool = False, nonempty: bool = False
    ) -> str | None:
        value = self._get(m, key, where, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self._wrong(m, key, where, "a string")
            return None
        if nonempty and not value.strip():
            self.error(at(where, key), "must not be empty")
            return None
        return value

    def get_name(self, m: Tree, key: str, where: str) -> str | None:
        """A required, non-empty, printable name (names end up in logs, events and commands)."""
        value = self.get_str(m, key, where, required=True, nonempty=True)
        if value is not None and not value.isprintable():
            self.error(at(where, key), f"{quote(value)}: must not contain control characters")
            return None
        return value

    def get_bool(self, m: Tree, key: str, where: str, *, required: bool = False) -> bool | None:
        value = self._get(m, key, where, required)
        if value is None or isinstance(value, bool):
            return value
        self._wrong(m, key, where, "a boolean (true or false)")
        return None

    def get_int(
        self,
        m: Tree,
        key: str,
        where: str,
        *,
        required: bool = False,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int | None:
        """An integer, checked against lo..hi (inclusive) when given."""
        value = self._get(m, key, where, required)
        if value is None:
            return None
        if not is_int(value):
            self._wrong(m, key, where, "an integer")
            return None
        assert isinstance(value, int)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
            self.error(at(where, key), f"{value}: must be in {span}")
            return None
        return value

    def get_asn(self, m: Tree, key: str, where: str, *, required: bool = False) -> int | None:
        """An autonomous system number, 1..4294967295."""
        return self.get_int(m, key, where, required=required, lo=1, hi=ASN_MAX)

    def get_str_list(self, m: Tree, key: str, where: str) -> tuple[str, ...] | None:
        items = self.get_list(m, key, where)
        if items is None:
            return None
        out: list[str] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.error(at(at(where, key), i), f"must be a string, not {type_name(item)}")
        return tuple(out) if len(out) == len(items) else None

    def get_duration(
        self, m: Tree, key: str, where: str, *, required: bool = False
    ) -> float | None:
        """A Go-style duration string ('90s', '1m30s') -> seconds."""
        text = self.get_str(m, key, where, required=required)
        return None if text is None else self._parsed(parse_duration, text, at(where, key))

    def get_ip(self, m: Tree, key: str, where: str, *, required: bool = False) -> IPAddress | None:
        text = self.get_str(m, key, where, required=required)
        return None if text is None else self._parsed(parse_ip, text, at(where, key))

    def _parsed(self, parse: Callable[[str], T], text: str, where: str) -> T | None:
        try:
            return parse(text)
        except ValueError as err:
            self.error(where, str(err))
            return None

    # --- values with structure ------------------------------------------------------------------

    def address_range(self, value: object, where: str) -> AddressRange | None:
        """One pool entry (CIDR, 'a-b' range, or single IP as /32 or /128)."""
        if not isinstance(value, str):
            self.error(where, f"must be a string, not {type_name(value)}")
            return None
        try:
            r, warning = parse_address_range(value)
        except ValueError as err:
            self.error(where, str(err))
            return None
        if warning:
            self.warn(where, warning)
        return r

    def selector(
        self, value: object, where: str, keys: SelectorKeys = CAMEL_KEYS
    ) -> LabelSelector | None:
        """A label selector {matchLabels, matchExpressions} (or MetalLB's kebab-case keys)."""
        m = self.mapping(value, where)
        if m is None:
            return None
        errors = len(self.errors)
        self.reject_unknown(m, (keys.match_labels, keys.match_expressions), where)
        labels = match_labels(self, m, keys.match_labels, where)
        exprs = [requirement(self, e, w) for w, e in self.entries(m, keys.match_expressions, where)]
        if len(self.errors) > errors:
            return None
        return LabelSelector(tuple(labels), tuple(r for r in exprs if r is not None))

    def selectors(
        self, m: Tree, key: str, where: str, keys: SelectorKeys = CAMEL_KEYS
    ) -> tuple[LabelSelector, ...]:
        """A list of selectors (an OR; empty matches everything)."""
        items = self.get_list(m, key, where) or []
        found = [self.selector(item, at(at(where, key), i), keys) for i, item in enumerate(items)]
        return tuple(s for s in found if s is not None)

    def checked(self, check: Callable[[str], None], text: str, where: str) -> bool:
        try:
            check(text)
        except ValueError as err:
            self.error(where, str(err))
            return False
        return True

    def community(
        self,
        value: object,
        where: str,
        aliases: Mapping[str, Community],
        *,
        allow_large: bool = True,
    ) -> Community | None:
        """A community value or an alias defined in `aliases`."""
        if not isinstance(value, str):
            self.error(where, f"must be a string, not {type_name(value)}")
            return None
        if value in aliases:
            return aliases[value]
        if ":" not in value:
            self.error(where, f"{quote(value)}: unknown community alias")
            return None
        return self._parsed(lambda t: parse_community(t, allow_large=allow_large), value, where)

    def community_aliases(
        self, m: Tree, key: str, where: str, *, allow_large: bool = True
    ) -> dict[str, Community]:
        """A map alias -> community value ('bgp-communities', 'communities')."""
        out: dict[str, Community] = {}
        for alias, value in (self.get_map(m, key, where) or {}).items():
            w = at(at(where, key), key_text(alias))
            if not isinstance(alias, str) or not alias or ":" in alias:
                self.error(w, "an alias must be a non-empty string without ':'")
                continue
            found = self.community(value, w, {}, allow_large=allow_large)
            if found is not None:
                out[alias] = found
        return out

    # --- whole-document checks ------------------------------------------------------------------

    def check_overlaps(self, entries: Iterable[tuple[str, AddressRange]]) -> None:
        """Every range overlapping another (same pool or not) is an error: O(n log n).

        Sorted by start, a range overlaps an earlier one iff it starts at or before the furthest
        end seen so far; it is reported against the range owning that end.
        """
        ordered = sorted(entries, key=lambda e: (e[1].family, int(e[1].first), int(e[1].last)))
        reach: tuple[str, AddressRange] | None = None
        for where, r in ordered:
            if reach is not None and reach[1].family != r.family:
                reach = None
            if reach is not None and int(r.first) <= int(reach[1].last):
                self.error(where, f"{quote(r.text)} overlaps {reach[0]} ({quote(reach[1].text)})")
            if reach is None or int(r.last) > int(reach[1].last):
                reach = (where, r)

    def check_unique(self, entries: Iterable[tuple[str, str]], what: str) -> None:
        """Each (where, key) whose key was seen before is an error naming the first place."""
        seen: dict[str, str] = {}
        for where, key in entries:
            if key in seen:
                self.error(where, f"duplicate {what} {quote(key)} (first at {seen[key]})")
            else:
                seen[key] = where
