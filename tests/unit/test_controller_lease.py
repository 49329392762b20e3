"""Leader election: the pure decision table, the Lease specs we write, and the elector's state
machine driven by a fake clock over an in-memory Lease store (no sleeping, no API)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from controller.lease import LeaderElector, LeaseConflict, LeaseError, default_identity
from lbctl.core.lease import (
    LEASE_NAME,
    Action,
    Decision,
    LeaseRecord,
    LeaseTiming,
    Why,
    decide,
    is_fresh,
    lease_spec,
    micro_time,
    parse_lease,
    released_spec,
)

ME, OTHER = "me", "other"
T0 = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def rec(holder: str = OTHER, duration: int = 3, **kw: Any) -> LeaseRecord:
    base = LeaseRecord(holder, duration, "2026-01-01T00:00:00.000000Z",
                       "2026-01-01T00:00:00.000000Z", 2, "7")  # fmt: skip
    return replace(base, **kw)


# ---- decide: the pure table ------------------------------------------------------------------

CASES = [
    # (record, observed_at, now, leading) -> Decision
    ("absent-creates", None, 0.0, 0.0, False, Action.CREATE, Why.ABSENT),
    ("absent-while-leading-is-lost", None, 0.0, 0.0, True, Action.LOST, Why.ABSENT),
    ("ours-renews", rec(ME), 0.0, 99.0, False, Action.RENEW, Why.OURS),
    ("ours-renews-while-leading", rec(ME), 0.0, 1.0, True, Action.RENEW, Why.OURS),
    ("released-is-taken-at-once", rec(""), 10.0, 10.0, False, Action.ACQUIRE, Why.RELEASED),
    ("fresh-other-waits", rec(), 10.0, 12.9, False, Action.WAIT, Why.HELD),
    ("expires-exactly-at-duration", rec(), 10.0, 13.0, False, Action.ACQUIRE, Why.EXPIRED),
    ("expired-other-is-taken", rec(), 10.0, 20.0, False, Action.ACQUIRE, Why.EXPIRED),
    ("uses-the-records-duration", rec(duration=15), 10.0, 20.0, False, Action.WAIT, Why.HELD),
    ("missing-duration-is-zero", rec(duration=0), 10.0, 10.0, False, Action.ACQUIRE, Why.EXPIRED),
    ("other-while-leading-is-lost", rec(), 10.0, 10.5, True, Action.LOST, Why.HELD),
    ("released-while-leading-is-lost", rec(""), 1.0, 1.0, True, Action.LOST, Why.RELEASED),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide_table(case: tuple[Any, ...]) -> None:
    _, record, observed_at, now, leading, action, why = case
    assert decide(record, observed_at, now, ME, leading=leading) == Decision(action, why)


def test_decide_never_trusts_the_remote_renew_time() -> None:
    ancient = rec(renew_time="1970-01-01T00:00:00.000000Z")
    future = rec(renew_time="2999-01-01T00:00:00.000000Z")
    # Seen change 1 s ago on our clock: live, however old its renewTime claims to be ...
    assert decide(ancient, 100.0, 101.0, ME, leading=False).action is Action.WAIT
    # ... and unchanged for longer than its duration: expired, whatever the remote clock says.
    assert decide(future, 100.0, 104.0, ME, leading=False).action is Action.ACQUIRE


@pytest.mark.parametrize(
    ("renewed_at", "now", "fresh"),
    [(None, 0.0, False), (10.0, 10.0, True), (10.0, 11.999, True), (10.0, 12.0, False)],
    ids=["never-renewed", "just-renewed", "before-deadline", "at-deadline"],
)
def test_is_fresh_until_the_renew_deadline(
    renewed_at: float | None, now: float, fresh: bool
) -> None:
    assert is_fresh(renewed_at, now, 2.0) is fresh


# ---- specs and parsing -----------------------------------------------------------------------


def test_micro_time_is_rfc3339_with_six_digits_in_utc() -> None:
    assert micro_time(T0) == "2026-01-02T03:04:05.600000Z"
    assert micro_time(T0.replace(microsecond=0)) == "2026-01-02T03:04:05.000000Z"
    east = T0.astimezone(timezone(timedelta(hours=5)))
    assert micro_time(east) == "2026-01-02T03:04:05.600000Z"


SPEC_CASES = [
    ("create", None, 0, "now"),
    ("renew-keeps-acquire-and-count", rec(ME), 2, "2026-01-01T00:00:00.000000Z"),
    ("take-over-counts-a-transition", rec(OTHER), 3, "now"),
    ("take-released-counts-a-transition", rec(""), 3, "now"),
]


@pytest.mark.parametrize(
    ("record", "transitions", "acquired"),
    [c[1:] for c in SPEC_CASES],
    ids=[c[0] for c in SPEC_CASES],
)
def test_lease_spec(record: LeaseRecord | None, transitions: int, acquired: str) -> None:
    spec = lease_spec(record, ME, 3, T0)
    now = micro_time(T0)
    assert spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 3,
        "acquireTime": now if acquired == "now" else acquired,
        "renewTime": now,
        "leaseTransitions": transitions,
    }


def test_released_spec_names_nobody_for_one_second() -> None:
    spec = released_spec(rec(ME), T0)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2
    assert MICRO.match(spec["renewTime"])


def test_parse_lease_reads_spec_and_resource_version() -> None:
    body = {"metadata": {"name": LEASE_NAME, "resourceVersion": "42"},
            "spec": lease_spec(None, ME, 3, T0)}  # fmt: skip
    got = parse_lease(body)
    assert (got.holder, got.duration, got.transitions, got.resource_version) == (ME, 3, 0, "42")
    empty = parse_lease({"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": None}})
    assert (empty.holder, empty.duration, empty.transitions) == ("", 0, 0)


@pytest.mark.parametrize(
    "kw",
    [
        {"renew_deadline": 3.0},  # no fencing margin
        {"retry_period": 2.0},  # no second attempt before the deadline
        {"request_timeout": 5.0},  # a hung call would outlive the deadline
        {"retry_period": 0.0},
    ],
    ids=["deadline-not-below-lease", "retry-too-slow", "timeout-too-long", "zero-retry"],
)
def test_timing_rejects_unsafe_combinations(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        LeaseTiming(**kw)  # type: ignore[arg-type]


def test_default_timing_takes_over_within_5s_worst_case() -> None:
    t = LeaseTiming()
    assert t.lease_duration + 2 * t.retry_period * (1 + t.jitter) <= 4.5
    assert t.lease_duration - t.renew_deadline >= 1.0


def test_default_identity_is_unique_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "lbctl-controller-7d9f-abcde")
    one, two = default_identity(), default_identity()
    assert one.startswith("lbctl-controller-7d9f-abcde_")
    assert one != two


# ---- the elector over a fake store, on a fake clock ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeStore:
    """One Lease in memory with API semantics: resourceVersions, 409 on a stale write."""

    def __init__(self, clock: Clock) -> None:
        self.body: dict[str, Any] | None = None
        self.rv = itertools.count(1)
        self.clock = clock
        self.fail_writes = False
        self.fail_reads = False
        self.latency = 0.0  # fake seconds a write takes, landing at its end
        self.after_get: Callable[[], Awaitable[None]] | None = None
        self.writes: list[tuple[str, str]] = []  # (verb, holder) of successful writes

    def record(self) -> LeaseRecord | None:
        return None if self.body is None else parse_lease(self.body)

    async def get(self) -> LeaseRecord | None:
        if self.fail_reads:
            raise LeaseError("reading: HTTP 500")
        got = self.record()
        if self.after_get is not None:
            hook, self.after_get = self.after_get, None
            await hook()
        return got

    def _commit(self, verb: str, spec: dict[str, Any]) -> LeaseRecord:
        if self.fail_writes:
            raise LeaseError(f"{verb}: HTTP 500")
        self.clock.advance(self.latency)
        self.body = {"metadata": {"resourceVersion": str(next(self.rv))}, "spec": spec}
        self.writes.append((verb, spec["holderIdentity"]))
        return parse_lease(self.body)

    async def create(self, spec: dict[str, Any]) -> LeaseRecord:
        if self.body is not None:
            raise LeaseConflict("creating: HTTP 409")
        return self._commit("create", spec)

    async def replace(self, spec: dict[str, Any], resource_version: str) -> LeaseRecord:
        if self.body is None or self.body["metadata"]["resourceVersion"] != resource_version:
            raise LeaseConflict("replacing: HTTP 409")
        return self._commit("update", spec)

    def close(self) -> None:
        pass


class Candidate:
    """An elector plus what its callbacks said."""

    def __init__(self, store: FakeStore, clock: Clock, identity: str, **kw: Any) -> None:
        self.said: list[str] = []
        self.elector = LeaderElector(
            store,
            identity,
            clock=clock,
            wall=lambda: T0 + timedelta(seconds=clock.now),
            on_started_leading=lambda: self.said.append("started"),
            on_stopped_leading=lambda: self.said.append("stopped"),
            **kw,
        )

    def step(self) -> float:
        return asyncio.run(self.elector.step())

    def leads(self) -> bool:
        return self.elector.is_leader()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> FakeStore:
    return FakeStore(clock)


def test_first_candidate_creates_the_lease_and_renews_it(clock: Clock, store: FakeStore) -> None:
    me = Candidate(store, clock, ME)
    assert me.step() == 0.5
    assert me.leads() and me.said == ["started"]
    first = store.record()
    assert first is not None and first.transitions == 0
    clock.advance(0.5)
    me.step()
    renewed = store.record()
    assert renewed is not None
    assert (renewed.holder, renewed.transitions, renewed.acquire_time) == (
        ME,
        0,
        first.acquire_time,
    )
    assert renewed.renew_time != first.renew_time
    assert store.writes == [("create", ME), ("update", ME)]
    assert me.said == ["started"]


def test_standby_waits_out_the_lease_on_its_own_clock(clock: Clock, store: FakeStore) -> None:
    leader, standby = Candidate(store, clock, OTHER), Candidate(store, clock, ME)
    leader.step()
    standby.step()  # sees the record change now
    assert not standby.leads()
    clock.advance(2.9)  # the leader died: no more renewals
    standby.step()
    assert not standby.leads()
    assert not leader.leads()  # fenced on its own clock long before the standby may take over
    clock.advance(0.1)
    standby.step()
    assert standby.leads() and standby.said == ["started"]
    now = store.record()
    assert now is not None and (now.holder, now.transitions) == (ME, 1)


def test_standby_restarts_the_wait_when_the_leader_renews(clock: Clock, store: FakeStore) -> None:
    leader, standby = Candidate(store, clock, OTHER), Candidate(store, clock, ME)
    leader.step()
    standby.step()
    for _ in range(10):  # 10 x 0.5 s: well past one lease duration in total
        clock.advance(0.5)
        leader.step()
        standby.step()
        assert leader.leads() and not standby.leads()


def test_old_leader_learns_it_lost_and_says_so(clock: Clock, store: FakeStore) -> None:
    old, new = Candidate(store, clock, OTHER), Candidate(store, clock, ME)
    old.step()
    new.step()
    clock.advance(3.0)  # old was paused (GC, network) for a whole lease
    new.step()
    assert new.leads()
    assert not old.leads()  # fenced already, by its own clock
    old.step()  # its renew gets 409, its read shows the new holder
    assert old.said == ["started", "stopped"]
    assert not old.leads()
    assert old.elector.holder == ME
    assert [h for verb, h in store.writes if verb == "update"] == [ME]


def test_failing_writes_fence_the_leader_at_its_renew_deadline(
    clock: Clock, store: FakeStore
) -> None:
    me = Candidate(store, clock, ME)
    me.step()
    store.fail_writes = True
    clock.advance(1.999)
    me.step()  # renew fails; still inside the deadline
    assert me.leads() and me.said == ["started"]
    clock.advance(0.001)
    assert not me.leads()  # flips by itself, before any other step
    me.step()
    assert me.said == ["started", "stopped"]


def test_fence_counts_from_when_the_renew_was_sent(clock: Clock, store: FakeStore) -> None:
    store.latency = 0.4  # the write lands 0.4 s after it was sent
    me = Candidate(store, clock, ME)
    sent = clock.now
    me.step()
    clock.now = sent + 1.999
    assert me.leads()
    clock.now = sent + 2.0
    assert not me.leads()


def test_leader_that_recovers_before_anyone_took_over_resumes(
    clock: Clock, store: FakeStore
) -> None:
    me = Candidate(store, clock, ME)
    me.step()
    store.fail_writes = True
    clock.advance(2.5)
    me.step()
    assert not me.leads()
    store.fail_writes = False
    clock.advance(0.5)
    me.step()  # the record is still ours and unchanged: the RV-guarded renew succeeds
    assert me.leads()
    assert me.said == ["started", "stopped", "started"]
    assert me.elector.continued  # nobody held it meanwhile: the controller resumes


def test_leadership_continues_only_when_nobody_else_held_the_lease(
    clock: Clock, store: FakeStore
) -> None:
    me, other = Candidate(store, clock, ME), Candidate(store, clock, OTHER)
    me.step()
    assert me.leads() and not me.elector.continued  # a first acquisition
    other.step()
    clock.advance(3.0)  # we stalled a whole lease: the other took over
    other.step()
    assert other.leads()
    other.elector.release_on_cancel = True
    asyncio.run(other.elector.release())
    me.step()  # its renew is a 409; the read shows another wrote: lost
    assert not me.leads()
    me.step()  # acquires the released Lease: a new leadership, not a continued one
    assert me.leads() and not me.elector.continued


def test_graceful_release_lets_the_standby_take_over_at_once(
    clock: Clock, store: FakeStore
) -> None:
    leader, standby = Candidate(store, clock, OTHER), Candidate(store, clock, ME)
    leader.step()
    standby.step()
    assert asyncio.run(leader.elector.release()) is True
    assert not leader.leads() and leader.said == ["started", "stopped"]
    released = store.record()
    assert released is not None and (released.holder, released.duration) == ("", 1)
    standby.step()  # no clock advance needed
    assert standby.leads()
    now = store.record()
    assert now is not None and now.transitions == 1


def test_release_by_a_non_holder_writes_nothing(clock: Clock, store: FakeStore) -> None:
    leader, standby = Candidate(store, clock, OTHER), Candidate(store, clock, ME)
    leader.step()
    standby.step()
    assert asyncio.run(standby.elector.release()) is False
    assert store.writes == [("create", OTHER)]


def test_two_standbys_racing_for_an_expired_lease_one_wins(clock: Clock, store: FakeStore) -> None:
    dead, one, two = (Candidate(store, clock, n) for n in ("dead", "one", "two"))
    dead.step()
    one.step()
    two.step()
    clock.advance(3.0)

    async def two_gets_in_first() -> None:
        await two.elector.step()

    store.after_get = two_gets_in_first  # `one` read the expired record, then `two` wins
    one.step()  # its PUT carries the stale resourceVersion: 409
    assert two.leads() and not one.leads()
    assert one.said == []
    updates = [h for verb, h in store.writes if verb == "update"]
    assert updates == ["two"]


def test_create_race_loser_becomes_standby(clock: Clock, store: FakeStore) -> None:
    one, two = Candidate(store, clock, "one"), Candidate(store, clock, "two")

    async def two_creates_first() -> None:
        await two.elector.step()

    store.after_get = two_creates_first
    one.step()  # read "absent", then its create gets 409
    assert two.leads() and not one.leads()
    one.step()
    assert one.elector.holder == "two" and not one.leads()


def test_read_errors_keep_a_standby_waiting(clock: Clock, store: FakeStore) -> None:
    me = Candidate(store, clock, ME)
    store.fail_reads = True
    for _ in range(5):
        assert me.step() == 0.5
        clock.advance(10)
    assert not me.leads() and store.writes == []


def test_a_failing_callback_does_not_stop_the_campaign(
    clock: Clock, store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("callback bug")

    elector = LeaderElector(store, ME, clock=clock, on_started_leading=boom)
    asyncio.run(elector.step())
    assert elector.is_leader()
    assert "leader_callback_failed" in caplog.text


FAST = LeaseTiming(lease_duration=1, renew_deadline=0.5, retry_period=0.01, request_timeout=0.5)


@pytest.mark.parametrize("release", [True, False], ids=["graceful", "killed"])
def test_run_releases_on_cancel_only_when_asked(store: FakeStore, release: bool) -> None:
    said: list[str] = []
    elector = LeaderElector(
        store, ME, timing=FAST, release_on_cancel=release,
        on_started_leading=lambda: said.append("started"),
        on_stopped_leading=lambda: said.append("stopped"),
    )  # fmt: skip

    async def scenario() -> None:
        task = asyncio.create_task(elector.run())
        for _ in range(200):  # bounded: 2 s
            if len(store.writes) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert said == ["started", "stopped"]
    assert not elector.is_leader()
    final = store.record()
    assert final is not None
    assert final.holder == ("" if release else ME)


def test_release_retries_once_when_a_cancelled_renew_landed(clock: Clock, store: FakeStore) -> None:
    me = Candidate(store, clock, ME)
    me.step()
    assert store.body is not None
    store.body["metadata"]["resourceVersion"] = "99"  # our last renew landed after we gave up
    assert asyncio.run(me.elector.release()) is True
    released = store.record()
    assert released is not None and released.holder == ""


def test_release_gives_up_when_someone_else_holds_it_by_now(clock: Clock, store: FakeStore) -> None:
    me = Candidate(store, clock, ME)
    me.step()
    assert store.body is not None
    store.body = {"metadata": {"resourceVersion": "99"}, "spec": lease_spec(None, OTHER, 3, T0)}
    assert asyncio.run(me.elector.release()) is False
    now = store.record()
    assert now is not None and now.holder == OTHER
