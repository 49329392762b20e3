"""Fault injection rules; tests add them, the fault proxy (lbctl.lab.faultproxy) applies them to
requests on their way to the real API server (the embedded server's middleware too, until it goes).

Rules are matched on identity, path (prefix string or compiled regex), source and verb; a rule
with a `count` disappears after that many hits. All methods are thread-safe: tests call them
from their own thread while the server loop reads them.
"""

from __future__ import annotations

import enum
import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypedDict, Unpack


class Selector(TypedDict, total=False):
    """Which requests a rule hits; a missing key matches anything."""

    identity: str
    path: str | re.Pattern[str]
    source: str
    verb: str


class FaultKind(enum.Enum):
    ERROR = "error"  # answer `status` (500, 409, ...) with a Status body
    DELAY = "delay"  # wait `delay` seconds, then serve normally
    WATCH_GONE = "watch_gone"  # a watch gets an ERROR event with a 410 Status, then ends
    DROP_WATCH = "drop_watch"  # a watch ends after `after_events` events or `after_seconds`
    UNAVAILABLE = "unavailable"  # 503 to everything matched
    RESET = "reset"  # the connection is reset (RST) instead of answered
    REFUSE = "refuse"  # the source's listeners are closed: connections are refused


@dataclass(frozen=True)
class FaultRule:
    """One rule; None in a selector field matches anything."""

    kind: FaultKind
    identity: str | None = None
    path: str | re.Pattern[str] | None = None
    source: str | None = None
    verb: str | None = None
    status: int = 500
    delay: float = 0.0
    after_events: int | None = None
    after_seconds: float | None = None
    count: int | None = None  # hits left; None = until removed
    id: int = 0
    hits: int = field(default=0, compare=False)

    def selects(self, identity: str, source: str, verb: str, path: str) -> bool:
        if self.identity is not None and self.identity != identity:
            return False
        if self.source is not None and self.source != source:
            return False
        if self.verb is not None and self.verb != verb:
            return False
        if isinstance(self.path, re.Pattern):
            return bool(self.path.search(path))
        return self.path is None or path.startswith(self.path)


REQUEST_KINDS = frozenset(
    {FaultKind.ERROR, FaultKind.DELAY, FaultKind.UNAVAILABLE, FaultKind.RESET}
)
WATCH_KINDS = frozenset({FaultKind.WATCH_GONE, FaultKind.DROP_WATCH})


class FaultInjector:
    """The set of active rules; `on_refuse` is told which sources must stop listening."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[int, FaultRule] = {}
        self._ids = itertools.count(1)
        self.on_refuse: Callable[[frozenset[str | None]], None] | None = None

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            rule = replace(rule, id=next(self._ids))
            self._rules[rule.id] = rule
        if rule.kind is FaultKind.REFUSE:
            self._refuse_changed()
        return rule

    def error(
        self, status: int = 500, *, count: int | None = None, **sel: Unpack[Selector]
    ) -> FaultRule:
        return self.add(FaultRule(FaultKind.ERROR, status=status, count=count, **sel))

    def delay(
        self, seconds: float, *, count: int | None = None, **sel: Unpack[Selector]
    ) -> FaultRule:
        return self.add(FaultRule(FaultKind.DELAY, delay=seconds, count=count, **sel))

    def watch_gone(self, *, count: int | None = None, **sel: Unpack[Selector]) -> FaultRule:
        return self.add(FaultRule(FaultKind.WATCH_GONE, count=count, **sel))

    def drop_watch(
        self,
        *,
        after_events: int | None = None,
        after_seconds: float | None = None,
        count: int | None = None,
        **sel: Unpack[Selector],
    ) -> FaultRule:
        rule = FaultRule(
            FaultKind.DROP_WATCH,
            after_events=after_events,
            after_seconds=after_seconds,
            count=count,
            **sel,
        )
        return self.add(rule)

    def outage(
        self, mode: str = "refuse", *, count: int | None = None, **sel: Unpack[Selector]
    ) -> FaultRule:
        """Full unavailability: mode "refuse" (TCP refused), "reset" (RST) or "503"."""
        kinds = {"refuse": FaultKind.REFUSE, "reset": FaultKind.RESET, "503": FaultKind.UNAVAILABLE}
        if mode not in kinds:
            raise ValueError(f"outage mode must be one of {sorted(kinds)}, not {mode!r}")
        return self.add(FaultRule(kinds[mode], status=503, count=count, **sel))

    def remove(self, rule: FaultRule | int) -> None:
        with self._lock:
            gone = self._rules.pop(rule if isinstance(rule, int) else rule.id, None)
        if gone is not None and gone.kind is FaultKind.REFUSE:
            self._refuse_changed()

    def clear(self) -> None:
        with self._lock:
            had_refuse = any(r.kind is FaultKind.REFUSE for r in self._rules.values())
            self._rules.clear()
        if had_refuse:
            self._refuse_changed()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules.values())

    def hits(self, rule: FaultRule | int) -> int:
        """How often a rule fired (0 once removed)."""
        with self._lock:
            found = self._rules.get(rule if isinstance(rule, int) else rule.id)
            return found.hits if found else 0

    def refused_sources(self) -> frozenset[str | None]:
        """Sources whose listeners must be closed; None means all of them."""
        with self._lock:
            return frozenset(r.source for r in self._rules.values() if r.kind is FaultKind.REFUSE)

    def take(
        self, kinds: frozenset[FaultKind], identity: str, source: str, verb: str, path: str
    ) -> FaultRule | None:
        """The first matching rule of `kinds`, counted as a hit (and dropped when used up)."""
        with self._lock:
            for rule in self._rules.values():
                if rule.kind in kinds and rule.selects(identity, source, verb, path):
                    hit = replace(rule, hits=rule.hits + 1)
                    if rule.count is not None:
                        hit = replace(hit, count=rule.count - 1)
                    if hit.count is not None and hit.count <= 0:
                        del self._rules[rule.id]
                    else:
                        self._rules[rule.id] = hit
                    return hit
        return None

    def _refuse_changed(self) -> None:
        if self.on_refuse is not None:
            self.on_refuse(self.refused_sources())
