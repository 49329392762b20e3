"""What keeps the controller from doing its job at all (no Lease namespace, no ConfigMap, no
usable key in it, an API server refusing its identity): one ERROR line each, saying what is
missing and what to do, repeated with backoff while it lasts; the same news in the metric
`lbctl_controller_start_blocked{reason}` and in /readyz. Fed by runner (the Lease) and operator
(the reads and the config); read by metrics and the health server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lbctl.core.reasons import StartBlock

log = logging.getLogger("lbctl.controller")

# Seconds between repeats of one ERROR line: often enough to be seen when someone looks at the
# log, rare enough that a controller left blocked overnight writes a few hundred lines, not 100k.
REPEAT_DELAYS = (5.0, 10.0, 30.0, 60.0, 300.0)  # the last repeats


@dataclass
class _Blocked:
    message: str
    next_at: float
    repeats: int = 0


class Blockers:
    """The current blockers, keyed by (reason, what was being done: `lease`, `read`, `config`).

    block()/clear() run on the controller's loop; blocked()/why() are read from the health
    server's thread and at scrape time, under a lock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._now: dict[tuple[StartBlock, str], _Blocked] = {}
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None

    def block(self, reason: StartBlock, what: str, message: str) -> None:
        """Say it now if new (or its message changed); run() repeats it with backoff."""
        key = (reason, what)
        with self._lock:
            known = self._now.get(key)
            if known is not None and known.message == message:
                return
            self._now[key] = _Blocked(message, self._clock() + REPEAT_DELAYS[0])
        log.error("start_blocked reason=%s %s", reason, message)
        if self._wake is not None:
            self._wake.set()

    def clear(self, reason: StartBlock, what: str) -> None:
        with self._lock:
            gone = self._now.pop((reason, what), None)
        if gone is not None:
            log.info("start_unblocked reason=%s what=%s", reason, what)

    def clear_all(self, what: str, *, but: StartBlock | None = None) -> None:
        """Clear every reason recorded for `what` (a request that succeeded), except `but`."""
        with self._lock:
            keys = [k for k in self._now if k[1] == what and k[0] is not but]
        for reason, _ in keys:
            self.clear(reason, what)

    def blocked(self) -> frozenset[StartBlock]:
        with self._lock:
            return frozenset(reason for reason, _ in self._now)

    def why(self) -> str:
        """Every blocker, one per line, for /readyz."""
        with self._lock:
            items = sorted(self._now.items(), key=lambda kv: (kv[0][0].value, kv[0][1]))
        return "".join(f"{reason}: {b.message}\n" for (reason, _), b in items)

    async def run(self) -> None:
        """Until cancelled: repeat each blocker's ERROR line when its backoff is due."""
        self._wake = asyncio.Event()
        while True:
            with self._lock:
                due = min((b.next_at for b in self._now.values()), default=None)
            now = self._clock()
            if due is None or due > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if due is None else due - now)
                continue
            self._repeat(now)

    def _repeat(self, now: float) -> None:
        with self._lock:
            due = [(k, b) for k, b in self._now.items() if b.next_at <= now]
            for _, b in due:
                b.repeats += 1
                b.next_at = now + REPEAT_DELAYS[min(b.repeats, len(REPEAT_DELAYS) - 1)]
        for (reason, _), b in due:
            log.error("start_blocked reason=%s repeats=%d %s", reason, b.repeats, b.message)


def refused(blockers: Blockers, what: str, err: Exception) -> bool:
    """Block on an API server refusing our identity (`err.status` 401 or 403) while doing
    `what`; True if it did (the caller's own line about the error can drop to DEBUG)."""
    status = getattr(err, "status", 0)
    if status == 401:
        blockers.block(
            StartBlock.UNAUTHORIZED,
            what,
            f"the API server does not accept this controller's credentials ({err}): check its "
            "kubeconfig, or its ServiceAccount token",
        )
        return True
    if status == 403:
        blockers.block(
            StartBlock.FORBIDDEN,
            what,
            f"the API server forbids this controller's identity a request it needs ({err}): "
            "apply deploy/rbac.yaml (or the chart's RBAC) for its ServiceAccount",
        )
        return True
    return False
