"""Two speakers' data planes exchanging liveness messages through encode/decode (no sockets, no
loop): reports travel only while the receiver lacks them, and ticks fall in phase."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace

import pytest

from lbctl.core.liveness_types import PROBE_INTERVAL, Group
from lbctl.core.model import IPAddress, NodeName
from speaker import dataplane, dataplane_messages
from speaker.dataplane import DataPlane
from speaker.dataplane_types import Answered, Plan
from speaker.probes import Kind, Message, decode, encode

N1, N2 = NodeName("node-1"), NodeName("node-2")
ADDR = {N1: ipaddress.ip_address("192.0.2.1"), N2: ipaddress.ip_address("192.0.2.2")}
MACS = {N1: "02:00:00:00:00:01", N2: "02:00:00:00:00:02"}
VIP = ipaddress.ip_address("192.0.2.200")
VIP2 = ipaddress.ip_address("192.0.2.201")
ONE_WAY = (Group(VIP, (VIP,), (N1, N2)),)  # node-2 monitors node-1
MUTUAL = (*ONE_WAY, Group(VIP2, (VIP2,), (N2, N1)))  # ... and node-1 monitors node-2


class Silent:
    """An announcer that never touches the wire; it keeps what it was told to hold, and the
    VIPs it was asked to announce again."""

    def __init__(self, mac: str = "02:00:00:00:00:01") -> None:
        self.desired: dict[IPAddress, str] = {}
        self.reannounced: list[IPAddress] = []
        self.mac = mac

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def sync(self, desired: Mapping[IPAddress, str]) -> None:
        self.desired = dict(desired)

    def update(self, changes: Mapping[IPAddress, str | None]) -> None:
        for vip, name in changes.items():
            if name is None:
                self.desired.pop(vip, None)
            else:
                self.desired[vip] = name

    def reannounce(self, vip: IPAddress) -> None:
        if vip not in self.desired:
            raise KeyError(vip)
        self.reannounced.append(vip)

    def interface_for(self, ip: IPAddress, allowed: tuple[str, ...]) -> str | None:
        return "eth0"

    def macs(self) -> tuple[str, ...]:
        return (self.mac,)

    def discard_pending(self) -> int:
        return 0

    async def probe(
        self, vip: IPAddress, interface: str | None = None, *, window: float = 0.1
    ) -> Answered:
        raise AssertionError("no ARP check in these tests")


class Wire:
    """Collects what a data plane sends, as datagrams."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, msg: Message, addr: tuple[str, int], body: bytes | None = None) -> None:
        self.sent.append(encode(msg, body))


def plane(me: NodeName, groups: tuple[Group, ...] = ONE_WAY) -> tuple[DataPlane, Wire]:
    p = DataPlane(me, Silent(MACS[me]), bind=(str(ADDR[me]), 7946))
    wire = Wire()
    p.endpoint = wire  # type: ignore[assignment]
    p._set_fresh(True)
    p._update(Plan(groups, {}, ADDR))
    return p, wire


def deliver(wire: Wire, to: DataPlane, src: NodeName) -> list[Message]:
    """Hand `to` everything `wire` sent; the messages, decoded."""
    msgs = [decode(d) for d in wire.sent]
    wire.sent.clear()
    for msg in msgs:
        to._on_message(msg, (str(ADDR[src]), 7946))
    return msgs


def tick(p: DataPlane) -> None:
    """The next tick of `p`, one interval after its last (the shell's clock, simulated)."""
    last = max((peer.last_probe for peer in p.liveness.peers.values()), default=time.monotonic())
    p._act(p.liveness.tick(last + PROBE_INTERVAL))


def round_trip(n2: DataPlane, w1: Wire, w2: Wire, n1: DataPlane) -> tuple[Message, Message]:
    """node-2 (the monitor) probes node-1, which acks."""
    tick(n2)
    (probe,) = deliver(w2, n1, N2)
    (ack,) = deliver(w1, n2, N1)
    return probe, ack


def test_steady_probes_and_acks_carry_no_report() -> None:
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    first = round_trip(n2, w1, w2, n1)
    assert all(m.body for m in first)  # neither knew the other's report
    second = round_trip(n2, w1, w2, n1)
    assert not second[0].body  # node-1 said it has node-2's report
    assert not any(m.body for m in round_trip(n2, w1, w2, n1))
    assert len(encode(second[0])) < 48


def test_a_changed_report_travels_once_more() -> None:
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    for _ in range(3):
        round_trip(n2, w1, w2, n1)
    n1._set_fresh(False)  # node-1's API view went stale: its report changes
    probe, ack = round_trip(n2, w1, w2, n1)
    assert ack.body and not probe.body
    assert n2.peer_fresh[N1] is False
    assert not any(m.body for m in round_trip(n2, w1, w2, n1))


def test_a_probe_naming_an_unknown_report_is_still_acked() -> None:
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    for _ in range(2):
        round_trip(n2, w1, w2, n1)
    restarted, w1b = plane(N1)  # node-1 restarted: it lacks node-2's report
    tick(n2)
    (probe,) = deliver(w2, restarted, N2)
    assert not probe.body
    (ack,) = deliver(w1b, n2, N1)
    assert ack.body and ack.seen == 0  # says it holds nothing: the next probe carries it
    tick(n2)
    (probe,) = deliver(w2, restarted, N2)
    assert probe.body


def test_an_acting_owner_that_takes_a_group_again_announces_it_again() -> None:
    """node-2 holds node-1's group; node-1 takes it back and leaves before node-2 heard it took
    it. node-2's announcer never let go; without a new burst the clients keep node-1's MAC."""
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    for _ in range(2):
        round_trip(n2, w1, w2, n1)
    n2.liveness.held[VIP] = 1  # node-2 acting owner at epoch 1 (node-1 was away)
    n2._apply()
    announcer = n2.announcer
    assert isinstance(announcer, Silent) and VIP in announcer.desired
    n1.liveness.held[VIP] = 2  # the hand-back: node-1 holds it at epoch 2 ...
    for node in n1.liveness.leave():  # ... and is SIGTERMed at once (DataPlane._shutdown)
        n1._send(Kind.PROBE, node)
    deliver(w1, n2, N1)
    assert n2.liveness.held[VIP] > 2, "node-2 took the group again, at a newer epoch"
    assert announcer.reannounced == [VIP]
    n2._apply(everything=True)  # nothing changed since: no new burst
    assert announcer.reannounced == [VIP]


def test_nodes_that_monitor_each_other_answer_with_their_own_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between two nodes that probe each other every interval an ack only doubles the
    datagrams: after the reports are exchanged, each one's probe answers the other's, whether it
    lands just before or just after the other's tick (ticks are in phase), and nobody misses."""
    start = time.monotonic()
    clock = [start]  # when a message is received (the receiver's clock)
    monkeypatch.setattr(dataplane_messages, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    n1, w1 = plane(N1, MUTUAL)
    n2, w2 = plane(N2, MUTUAL)
    order = random.Random(9)
    rounds: list[list[Message]] = []
    since = []  # when each began its current run of answers (a miss restarts it)
    for i in range(1, 61):  # 6 s: past the start-up hold
        at = start + i * PROBE_INTERVAL  # both tick at this instant of their own clocks
        first, second = [(n1, w1, n2, N1), (n2, w2, n1, N2)][:: order.choice((1, -1))]
        msgs = []
        # the first's clock runs 3 ms ahead: its probe reaches the second before that one's
        # tick; the second's reaches the first just after its tick
        for p, wire, other, me, lands in (*first, at - 0.003), (*second, at + 0.001):
            p._act(p.liveness.tick(at))
            clock[0] = lands
            msgs += deliver(wire, other, me)
        for _, wire, other, me in (first, second):  # acks, if any, come back at once
            msgs += deliver(wire, other, me)
        rounds.append(msgs)
        since.append((n1.liveness.peers[N2].answering_since, n2.liveness.peers[N1].answering_since))
    assert any(m.kind is Kind.ACK for m in rounds[0]), "a probe with a new report is acked"
    steady = [m for msgs in rounds[-30:] for m in msgs]
    assert [m.kind for m in steady] == [Kind.PROBE] * 60, "one probe each way, no ack"
    assert len(set(since[-30:])) == 1, "no miss: the runs of answers a hand-back waits on go on"
    assert set(n1.liveness.held) == {VIP} and set(n2.liveness.held) == {VIP2}
    n2._send(Kind.PROBE, N1)  # not a regular probe (an indirect check's): acked
    deliver(w2, n1, N2)
    assert [m.kind for m in deliver(w1, n2, N1)] == [Kind.ACK]


def test_a_node_that_does_not_monitor_its_prober_acks() -> None:
    n1, w1 = plane(N1)  # node-1 monitors nobody
    n2, w2 = plane(N2)
    for _ in range(3):
        probe, ack = round_trip(n2, w1, w2, n1)
        assert probe.beat and ack.kind is Kind.ACK


@pytest.mark.parametrize("after", [0.0, 0.03, 0.0999, 12.34567])
def test_ticks_fall_on_multiples_of_the_interval_of_the_wall_clock(after: float) -> None:
    start = time.monotonic() + after
    at = dataplane._on_phase(start)
    wall = at + (time.time() - time.monotonic())
    assert start <= at < start + PROBE_INTERVAL + 1e-9
    assert min(wall % PROBE_INTERVAL, PROBE_INTERVAL - wall % PROBE_INTERVAL) < 1e-3


def test_plans_handed_faster_than_taken_are_not_queued_the_latest_wins() -> None:
    p = DataPlane(N1, Silent(), bind=("127.0.0.1", 0))
    taken: list[Plan] = []
    update = p._update
    p._update = lambda plan: (taken.append(plan), update(plan))[-1]  # type: ignore[method-assign]
    p.start()
    try:
        plans = [Plan((Group(VIP, (VIP,), (N1, N2)),), {}, {N1: ADDR[N1], N2: ADDR[n]})
                 for n in (N1, N2) * 50]  # fmt: skip
        for plan in plans:
            p.update(plan)
        deadline = time.monotonic() + 5.0
        while (not taken or taken[-1] is not plans[-1]) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the data plane's thread, bounded
        assert taken[-1] is plans[-1]
        assert len(taken) < len(plans) / 2, "handed over faster than taken: the latest wins"
    finally:
        p.stop(graceful=False)


def test_a_plan_handed_before_the_loop_runs_does_not_hold_back_the_next() -> None:
    p = DataPlane(N1, Silent(), bind=("127.0.0.1", 0))
    early, later = (Plan((Group(VIP, (VIP,), (N1, N2)),), {}, dict(ADDR)) for _ in range(2))
    p.update(early)  # no loop yet: kept, and taken when the loop starts
    p.start()
    try:
        p.update(later)
        deadline = time.monotonic() + 5.0
        while p.plan is not later and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the data plane's thread, bounded
        assert p.plan is later
    finally:
        p.stop(graceful=False)


class Picky(Silent):
    """An announcer with no interface for the VIPs in `nowhere`."""

    def __init__(self, nowhere: set[IPAddress]) -> None:
        super().__init__()
        self.nowhere = nowhere

    def interface_for(self, ip: IPAddress, allowed: tuple[str, ...]) -> str | None:
        return None if ip in self.nowhere else (allowed[0] if allowed else "eth0")


@pytest.mark.parametrize("seed", range(6))
def test_plans_taken_by_difference_end_where_whole_plans_do(seed: int) -> None:
    rng = random.Random(seed)
    keys = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 40)]
    nowhere = set(rng.sample(keys, 5))
    nodes = (N1, N2, NodeName("node-3"))
    by_diff, whole = (DataPlane(N1, Picky(nowhere), bind=("127.0.0.1", 0)) for _ in range(2))
    for p in (by_diff, whole):
        p.liveness.started -= 10  # past the start-up hold: rank 1 takes its groups at once
    groups: dict[IPAddress, Group] = {}
    interfaces: dict[IPAddress, tuple[str, ...]] = {}
    for step in range(80):
        changed: dict[IPAddress, Group | None] = {}
        for key in rng.sample(keys, rng.randint(1, 6)):
            ranking = list(nodes)
            rng.shuffle(ranking)
            if key in groups and rng.random() < 0.3:
                del groups[key]
                interfaces.pop(key, None)
                changed[key] = None
                continue
            extra = tuple(
                ipaddress.ip_address(int(key) + 256 * n) for n in range(1, rng.randint(1, 3))
            )
            groups[key] = changed[key] = Group(
                key, (key, *extra), tuple(ranking[: rng.randint(1, 3)])
            )
            if rng.random() < 0.3:
                interfaces[key] = ("eth1",)
            else:
                interfaces.pop(key, None)
        plan = Plan(tuple(groups.values()), dict(interfaces), ADDR)
        by_diff._update(dataclasses.replace(plan, changed=None if step == 0 else changed))
        whole._update(plan)
        assert by_diff._held == whole._held
        assert by_diff.announcer.desired == whole.announcer.desired  # type: ignore[attr-defined]
        assert by_diff.liveness.cannot == whole.liveness.cannot
        assert by_diff._group_of == whole._group_of
    assert by_diff._held and by_diff.liveness.cannot


def test_a_conflict_this_node_wins_is_repaired_by_a_new_burst_at_most_once_a_second() -> None:
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    for _ in range(2):
        round_trip(n2, w1, w2, n1)  # node-1 learns node-2's MAC from its report
    n1.liveness.held[VIP] = 1  # node-1, rank 1, holds the VIP
    n1._apply()
    announcer = n1.announcer
    assert isinstance(announcer, Silent)
    n2_mac = next(mac for mac, node in n1.speaker_macs.items() if node == N2)
    n1.conflict(VIP, n2_mac, "eth0")  # node-2's frame claimed it: node-1 ranks higher, keeps it
    n1.conflict(VIP, n2_mac, "eth0")
    assert VIP in n1.liveness.held
    assert announcer.reannounced == [VIP]


def test_a_change_of_the_holdings_alone_makes_a_new_report_at_a_paced_rate() -> None:
    n1, _ = plane(N1)
    n1._my_report()
    first = n1.reports.mine_id
    n1.liveness.held[VIP] = 1
    n1._report_due = time.monotonic() - 1  # the pace after the first report is over
    n1._my_report()
    assert n1.reports.mine_id != first and n1.reports.mine is not None
    assert dict(n1.reports.mine.holding) == {VIP: 1}
    second = n1.reports.mine_id
    n1._report_due = time.monotonic() + 60  # as after a costly report
    n1.liveness.held[VIP] = 2
    n1._my_report()
    assert n1.reports.mine_id == second, "paced: the holdings wait"
    n1._set_fresh(False)  # a flag goes out at once, with the holdings of now
    n1._my_report()
    assert n1.reports.mine_id != second and n1.reports.mine is not None
    assert dict(n1.reports.mine.holding) == {VIP: 2}


async def until(pred: Callable[[], object], what: str, timeout: float = 2.0) -> None:
    """Let the loop run until `pred` holds (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def holding(p: DataPlane, vip: IPAddress = VIP) -> list[tuple[IPAddress, str, str]]:
    """`p` holds `vip`; returns the list its DuplicateResponder reports go to."""
    foreign: list[tuple[IPAddress, str, str]] = []
    p.on_foreign = lambda ip, mac, iface: foreign.append((ip, mac, iface))
    p.liveness.held[vip] = 1
    p._apply()
    return foreign


def test_an_unknown_mac_waits_for_the_reports_of_speakers_not_heard_from_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """node-2 just had its first plan and holds the VIP; node-1's frame claims it before any
    message between them: node-2 asks node-1 for its report, learns node-1's MAC, and settles
    the conflict (node-1 ranks higher) instead of reporting a DuplicateResponder."""
    monkeypatch.setattr(dataplane_messages, "UNHEARD_WAIT", 0.05)
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    foreign = holding(n2)

    async def run() -> None:
        n2.conflict(VIP, MACS[N1], "eth0")
        n2.conflict(VIP, MACS[N1], "eth0")  # seen again while waiting: asked once
        (ask,) = deliver(w2, n1, N2)
        assert ask.kind is Kind.PROBE and not ask.beat
        (ack,) = deliver(w1, n2, N1)  # node-1's report, with its MAC
        assert ack.kind is Kind.ACK and ack.body
        n2.conflict(VIP, MACS[N1], "eth0")  # known now: the conflict rule, at once
        await until(lambda: n2._asking == set(), "the wait to end")

    asyncio.run(run())
    assert foreign == []
    assert VIP not in n2.liveness.held  # node-1 ranks higher: node-2 yielded


def test_an_unknown_mac_is_a_duplicate_responder_at_once_when_every_speaker_was_heard() -> None:
    n1, w1 = plane(N1)
    n2, w2 = plane(N2)
    round_trip(n2, w1, w2, n1)  # each has the other's report
    foreign = holding(n1)
    n1.conflict(VIP, "02:00:00:00:00:99", "eth0")
    assert foreign == [(VIP, "02:00:00:00:00:99", "eth0")]
    assert w1.sent == []  # nobody to ask


def test_an_unknown_mac_is_a_duplicate_responder_after_the_wait_if_no_report_lists_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A planned speaker that never answers (down) does not hide a foreign responder: once
    the wait is over, the answer is judged with what is known."""
    monkeypatch.setattr(dataplane_messages, "UNHEARD_WAIT", 0.05)
    n1, w1 = plane(N1)
    foreign = holding(n1)

    async def run() -> None:
        n1.conflict(VIP, "02:00:00:00:00:99", "eth0")
        assert foreign == []
        assert [m.kind for m in map(decode, w1.sent)] == [Kind.PROBE]  # node-2 asked
        await until(lambda: foreign, "the DuplicateResponder")

    asyncio.run(run())
    assert foreign == [(VIP, "02:00:00:00:00:99", "eth0")]
