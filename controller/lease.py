"""Leader election on the `lbctl-controller` Lease: the elector and its Lease store; built by
controller.runner. The decisions are pure (lbctl.core.lease); the Lease is read and written
through controller.kube, the controller's one writer, whose other writes `is_leader()` fences.

Every write carries the resourceVersion it was decided on, so a lost race is a 409, never two
holders; `is_leader()` turns False at the renew deadline even if a call hangs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from controller.kube import Conflict, Kube, KubeError
from lbctl.core.lease import (
    LEASE_NAME,
    Action,
    Body,
    Decision,
    LeaseRecord,
    LeaseTiming,
    Why,
    decide,
    is_fresh,
    lease_spec,
    parse_lease,
    released_spec,
)

__all__ = [  # the shell; the pure names live in lbctl.core.lease
    "KubeLeaseStore",
    "LeaderElector",
    "LeaseConflict",
    "LeaseError",
    "LeaseStore",
    "default_identity",
]

log = logging.getLogger("lbctl.controller.lease")

Clock = Callable[[], float]


def default_identity() -> str:
    """The pod name (POD_NAME, else the hostname) plus a random suffix, as client-go's examples:
    a restarted container must not inherit its previous incarnation's lease."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


# ---- the shell ---------------------------------------------------------------------------


class LeaseError(Exception):
    """A Lease read or write failed (no answer, timeout, 5xx, ...); `status` is the HTTP status
    (0: no answer at all)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# What the elector tells its owner after each request: what it did ("read", "create",
# "replace") and the error (None: it worked). True: the owner reported the error itself (see
# controller.blocked), so the elector's own line about it drops to DEBUG.
Report = Callable[[str, "LeaseError | None"], Awaitable[bool]]


async def _no_report(doing: str, err: LeaseError | None) -> bool:
    return False


class LeaseConflict(LeaseError):
    """409: the Lease was created or changed by someone else since we read it."""


class LeaseStore(Protocol):
    """Reads and writes one Lease; raises LeaseConflict / LeaseError."""

    async def get(self) -> LeaseRecord | None: ...
    async def create(self, spec: dict[str, Any]) -> LeaseRecord: ...
    async def replace(self, spec: dict[str, Any], resource_version: str) -> LeaseRecord: ...
    def close(self) -> None: ...


_KIND = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}


class KubeLeaseStore:
    """The Lease through controller.kube (the one writer, on the controller's one client), on two
    private threads: a renewal never waits behind Service writes in the writers' pool, never
    blocks the caller's loop (kopf's), and a hung call is abandoned at `timeout`. The client
    makes no retries of its own (runner builds it so): the election loop is the retry, one
    attempt per round."""

    def __init__(self, kube: Kube, namespace: str, name: str, timeout: float) -> None:
        self.kube, self.ns, self.name, self.timeout = kube, namespace, name, timeout
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"lease-{name}")

    async def _call(
        self, what: str, fn: Callable[..., Body | None], *args: Any
    ) -> LeaseRecord | None:
        def work() -> LeaseRecord | None:
            try:
                body = fn(self.ns, *args, self.timeout)
                return None if body is None else parse_lease(body)
            except Conflict as err:
                raise LeaseConflict(f"{what} lease {self.ns}/{self.name}: {err}", 409) from err
            except KubeError as err:
                raise LeaseError(f"{what} lease {self.ns}/{self.name}: {err}", err.status) from err
            except ValueError as err:
                raise LeaseError(f"{what} lease {self.ns}/{self.name}: {err}") from err

        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError as err:
            raise LeaseError(f"{what} lease {self.ns}/{self.name}: timed out") from err

    async def get(self) -> LeaseRecord | None:
        return await self._call("GET", self.kube.read_lease, self.name)

    async def create(self, spec: dict[str, Any]) -> LeaseRecord:
        body = {**_KIND, "metadata": {"name": self.name}, "spec": spec}
        made = await self._call("POST", self.kube.create_lease, body)
        if made is None:  # only reads answer None
            raise LeaseError(f"POST lease {self.ns}/{self.name}: no body")
        return made

    async def replace(self, spec: dict[str, Any], resource_version: str) -> LeaseRecord:
        meta = {"name": self.name, "resourceVersion": resource_version}
        done = await self._call(
            "PUT", self.kube.replace_lease, {**_KIND, "metadata": meta, "spec": spec}
        )
        if done is None:
            raise LeaseError(f"PUT lease {self.ns}/{self.name}: no body")
        return done

    def close(self) -> None:
        """Blocks until a call in flight ends (at most `timeout`: no retries). The client is
        the controller's, closed by its owner."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class LeaderElector:
    """Campaigns for the Lease until cancelled; `is_leader()` is the fencing hook for writers.

    Thread-safe to read (`is_leader`, `holder`); `run`/`step`/`release` belong to one loop.
    Callbacks are plain callables run on that loop; keep them short (set an Event, a gauge).
    """

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        *,
        timing: LeaseTiming | None = None,
        clock: Clock = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_started_leading: Callable[[], object] | None = None,
        on_stopped_leading: Callable[[], object] | None = None,
        on_other_leader: Callable[[], object] | None = None,
        release_on_cancel: bool = True,
        report: Report = _no_report,
    ) -> None:
        self.store, self.identity = store, identity
        self.timing = timing or LeaseTiming()
        self._clock, self._wall = clock, wall
        self._on_started = on_started_leading or (lambda: None)
        self._on_stopped = on_stopped_leading or (lambda: None)
        self._on_other = on_other_leader or (lambda: None)
        # Whether the leadership that started last continues the one before: it began with a
        # renewal of the record we wrote last (guarded by its resourceVersion), so nobody else
        # held the Lease, nor wrote, in between. False for a first acquisition.
        self.continued = False
        self.release_on_cancel = release_on_cancel
        self._report = report
        self._record: LeaseRecord | None = None
        self._observed_at = clock()
        self._renewed_at: float | None = None  # start of our last successful write as holder
        self._announced = False  # what the callbacks were last told
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def for_kube(
        cls,
        kube: Kube,
        namespace: str,
        identity: str | None = None,
        *,
        name: str = LEASE_NAME,
        timing: LeaseTiming | None = None,
        **kwargs: Any,
    ) -> LeaderElector:
        """An elector writing the Lease through `kube` (the controller's one writer)."""
        timing = timing or LeaseTiming()
        store = KubeLeaseStore(kube, namespace, name, timing.request_timeout)
        return cls(store, identity or default_identity(), timing=timing, **kwargs)

    # ---- what writers ask ---------------------------------------------------------------

    def is_leader(self) -> bool:
        return is_fresh(self._renewed_at, self._clock(), self.timing.renew_deadline)

    @property
    def holder(self) -> str | None:
        """The holder in the record last seen ("" released, None never seen)."""
        return None if self._record is None else self._record.holder

    # ---- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and renew until cancelled; then release (if `release_on_cancel`)."""
        try:
            while True:
                wait = await self.step()
                if not self.is_leader():
                    wait *= 1 + self.timing.jitter * random.random()
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            if self.release_on_cancel:
                await self.release()
            raise
        finally:
            self._renewed_at = None
            self._sync()
            if self._timer is not None:
                self._timer.cancel()
            await asyncio.to_thread(self.store.close)

    async def step(self) -> float:
        """One round: renew (fast path) or read, decide, write. Returns seconds until the next."""
        fast = self._renewed_at is not None and self._record is not None
        if fast and await self._write(Decision(Action.RENEW, Why.OURS), self._record):
            return self.timing.retry_period
        try:
            record = await self.store.get()
        except LeaseError as err:
            level = logging.DEBUG if await self._report("read", err) else logging.WARNING
            log.log(level, "lease_read_failed identity=%s error=%s", self.identity, err)
            self._sync()
            return self.timing.retry_period
        await self._report("read", None)
        self._observe(record)
        if record is not None and record.holder not in ("", self.identity):
            self._on_other()  # another replica leads: what we kept from ours is stale
        now, leading = self._clock(), self._renewed_at is not None
        decision = decide(record, self._observed_at, now, self.identity, leading=leading)
        if decision.action is Action.LOST:
            why = decision.why.value
            log.warning("lease_lost identity=%s holder=%s why=%s", self.identity, self.holder, why)
            self._renewed_at = None
        elif decision.action is not Action.WAIT:
            await self._write(decision, record)
        self._sync()
        return self.timing.retry_period

    async def _write(self, decision: Decision, record: LeaseRecord | None) -> bool:
        started = self._clock()
        spec = lease_spec(record, self.identity, self.timing.lease_duration, self._wall())
        doing = "create" if record is None else "replace"
        try:
            if record is None:
                new = await self.store.create(spec)
            else:
                new = await self.store.replace(spec, record.resource_version)
        except LeaseError as err:
            act = decision.action.value
            level = logging.DEBUG if await self._report(doing, err) else logging.INFO
            log.log(
                level, "lease_write_failed identity=%s action=%s error=%s", self.identity, act, err
            )
            return False
        await self._report(doing, None)
        if decision.action is not Action.RENEW:
            why, n = decision.why.value, new.transitions
            log.info("lease_acquired identity=%s why=%s transitions=%d", self.identity, why, n)
        self._observe(new)
        if not self.is_leader():  # leadership starts with this write
            self.continued = decision.action is Action.RENEW
        self._renewed_at = started
        self._sync()
        self._arm(started + self.timing.renew_deadline)
        return True

    async def release(self) -> bool:
        """Stop writing now, then hand the Lease over (no holder, 1 s); True if released.
        Called by `run` when cancelled; a renew cancelled mid-flight may still have landed,
        so a 409 is answered by one re-read and retry."""
        record, self._renewed_at = self._record, None
        self._sync(expected=True)
        for _ in range(2):
            if record is None or record.holder != self.identity:
                return False
            try:
                spec = released_spec(record, self._wall())
                self._observe(await self.store.replace(spec, record.resource_version))
            except LeaseConflict:
                record = await self._read_quietly()
                continue
            except LeaseError as err:
                log.warning("lease_release_failed identity=%s error=%s", self.identity, err)
                return False
            log.info("lease_released identity=%s", self.identity)
            return True
        return False

    async def _read_quietly(self) -> LeaseRecord | None:
        try:
            return await self.store.get()
        except LeaseError:
            return None

    # ---- bookkeeping --------------------------------------------------------------------

    def _observe(self, record: LeaseRecord | None) -> None:
        if record != self._record:
            self._record, self._observed_at = record, self._clock()

    def _sync(self, expected: bool = False) -> None:
        """Tell the callbacks when leadership flipped (the fence itself is `is_leader`).
        Stopping other than by release() (`expected`) is a warning: the renew deadline passed,
        or another holder appeared; the next leadership resumes only if `continued`, else the
        controller restores from a full listing."""
        leading = self.is_leader()
        if leading == self._announced:
            return
        self._announced = leading
        if leading or expected:
            log.info("leader_%s identity=%s", "started" if leading else "stopped", self.identity)
        else:
            log.warning("leader_stopped identity=%s unexpected=true", self.identity)
        callback = self._on_started if leading else self._on_stopped
        try:
            callback()
        except Exception:  # a callback's bug must not stop the campaign
            log.exception("leader_callback_failed identity=%s", self.identity)

    def _arm(self, deadline: float) -> None:
        """Wake at the renew deadline so on_stopped_leading fires even if a call hangs."""
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, deadline - self._clock()) + 0.001
        self._timer = asyncio.get_running_loop().call_later(delay, self._sync)
