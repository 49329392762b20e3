"""L2 liveness, the pure half, on a simulated network of speakers with a simulated clock: exactly
one holder in steady state, takeovers only when the checks agree, hand-backs without flip-flop."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from lbctl.core.liveness import Liveness
from lbctl.core.liveness_types import HANDBACK_AFTER, PROBE_INTERVAL, Group, Verdict
from lbctl.core.model import IPAddress, NodeName

VIP = ipaddress.ip_address("192.0.2.200")
RANKING = (NodeName("n1"), NodeName("n2"), NodeName("n3"), NodeName("n4"))
N1, N2, N3, N4 = RANKING
GROUP = Group(VIP, (VIP,), RANKING)


@dataclass
class Net:
    """Speakers exchanging probes by direct calls; links, pauses and deaths are switches."""

    now: float = 0.0
    speakers: dict[NodeName, Liveness] = field(default_factory=dict)
    dead: set[NodeName] = field(default_factory=set)
    paused: dict[NodeName, float] = field(default_factory=dict)  # node -> paused since
    cut: set[tuple[NodeName, NodeName]] = field(default_factory=set)  # one-way drops
    arp_answers: bool = True  # whether a holder answers ARP probes (the ARP path works)
    lags: dict[NodeName, float] = field(default_factory=dict)  # each tick's own-loop lag
    history: list[tuple[float, frozenset[NodeName]]] = field(default_factory=list)

    @classmethod
    def of(cls, nodes: tuple[NodeName, ...] = RANKING, groups: tuple[Group, ...] = (GROUP,)) -> Net:
        net = cls()
        for name in nodes:
            speaker = Liveness(name, 0.0)
            speaker.set_groups(groups, 0.0)
            net.speakers[name] = speaker
        return net

    def up(self, node: NodeName) -> bool:
        return node not in self.dead and node not in self.paused

    def link(self, a: NodeName, b: NodeName) -> bool:
        return self.up(a) and self.up(b) and (a, b) not in self.cut

    def probe(self, src: NodeName, dst: NodeName) -> bool:
        """src probes dst; True when the ack came back."""
        me, them = self.speakers[src], self.speakers[dst]
        if not self.link(src, dst):
            return False
        them.on_report(me.report(fresh=True), self.now, ack=False)
        if not self.link(dst, src):
            return False
        me.on_report(them.report(fresh=True), self.now, ack=True)
        return True

    def step(self) -> None:
        self.now = round(self.now + PROBE_INTERVAL / 2, 6)
        for name, speaker in self.speakers.items():
            if not self.up(name):
                continue
            speaker.api_ok(self.now)
            speaker.on_lag(self.lags.get(name, 0.0), self.now)  # the shell does this every tick
            actions = speaker.tick(self.now)
            for target in actions.probes:
                self.probe(name, target)
            for helper, target in actions.indirect:
                reached = self.link(name, helper) and self.probe(helper, target)
                if reached and self.link(helper, name):
                    speaker.on_check(target, self.now)
            for ip in actions.arp_probes:
                holders = [n for n in self.holders() if ip in self.speakers[n].holding()]
                if self.arp_answers and holders:
                    owner = self.speakers[name].groups[VIP].ranking[0]
                    speaker.on_check(owner, self.now)
            for target, keys in actions.handbacks:
                if self.link(name, target):
                    self.speakers[target].on_handback(keys, self.now)
        self.history.append((self.now, self.holders()))

    def holders(self) -> frozenset[NodeName]:
        return frozenset(n for n, s in self.speakers.items() if self.up(n) and s.held)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / (PROBE_INTERVAL / 2))):
            self.step()

    def until(self, pred: Callable[[], bool], seconds: float) -> float:
        """Step until pred holds; the simulated time it took."""
        start = self.now
        for _ in range(round(seconds / (PROBE_INTERVAL / 2))):
            if pred():
                return self.now - start
            self.step()
        raise AssertionError(f"not within {seconds} simulated s; holders {self.holders()}")

    def pause(self, node: NodeName) -> None:
        self.paused[node] = self.now

    def resume(self, node: NodeName) -> None:
        since = self.paused.pop(node)
        self.speakers[node].on_lag(self.now - since, self.now)

    def takeovers(self) -> int:
        """How many times the set of holders changed to a different single holder."""
        singles = [h for _, h in self.history if len(h) == 1]
        return sum(a != b for a, b in itertools.pairwise(singles))


def settled() -> Net:
    net = Net.of()
    net.run(1.0)
    assert net.holders() == {N1}
    return net


def test_rank_one_holds_alone_in_steady_state() -> None:
    net = settled()
    net.run(10.0)
    assert {h for _, h in net.history[-190:]} == {frozenset({N1})}
    assert net.speakers[N1].verdicts[VIP] is Verdict.OWNER
    assert net.speakers[N2].verdicts[VIP] is Verdict.NOT_OWNER


def test_a_new_speaker_waits_before_taking_its_groups() -> None:
    net = Net.of()
    net.step()
    assert net.holders() == frozenset()
    assert net.speakers[N1].verdicts[VIP] is Verdict.STARTING


def test_rank_two_takes_over_a_dead_owner_within_a_second() -> None:
    net = settled()
    net.dead.add(N1)
    took = net.until(lambda: net.holders() == {N2}, 2.0)
    assert 0.5 <= took <= 0.8, took
    net.run(5.0)
    assert net.holders() == {N2}, "rank 3 never joins while rank 2 holds"


def test_rank_three_takes_over_only_when_ranks_one_and_two_fail() -> None:
    net = settled()
    net.dead.update({N1, N2})
    net.until(lambda: net.holders() == {N3}, 2.0)
    net.run(3.0)
    assert net.holders() == {N3}


def test_a_leaving_owner_is_replaced_at_once() -> None:
    net = settled()
    assert net.speakers[N1].leave() == (N2, N3)
    took = net.until(lambda: net.holders() == {N2}, 1.0)
    assert took <= 2 * PROBE_INTERVAL


def test_an_owner_leaving_before_it_took_its_group_tells_its_monitors() -> None:
    net = Net.of()  # n1 is still starting: it holds nothing yet
    assert net.speakers[N1].held == {}
    assert net.speakers[N1].leave() == (N2, N3)
    took = net.until(lambda: net.holders() == {N2}, 1.0)
    assert took <= 2 * PROBE_INTERVAL


@pytest.mark.parametrize(
    ("stall", "takeovers"),
    [
        pytest.param(0.3, 0, id="300ms-no-takeover"),
        pytest.param(3.0, 2, id="3s-one-takeover-one-handback"),
    ],
)
def test_a_stalled_owner(stall: float, takeovers: int) -> None:
    net = settled()
    net.pause(N1)
    net.run(stall)
    net.resume(N1)
    net.run(HANDBACK_AFTER + 2.0)
    assert net.holders() == {N1}
    assert net.takeovers() == takeovers
    overlaps = [t for t, h in net.history if len(h) > 1]
    assert len(overlaps) <= 2, "two holders at most for one probe round at the hand-back"


def test_a_stalled_monitor_declares_nobody_dead() -> None:
    net = settled()
    net.pause(N2)
    net.run(1.0)
    net.resume(N2)
    net.run(2.0)
    assert net.takeovers() == 0 and net.holders() == {N1}


def test_lost_acks_from_owner_to_rank_two_are_cleared_by_the_indirect_probe() -> None:
    net = settled()
    net.cut.add((N1, N2))
    net.arp_answers = False  # only the indirect probe through rank 3 can clear it
    net.run(5.0)
    assert net.takeovers() == 0 and net.holders() == {N1}


def test_probes_dropped_but_the_vip_answering_arp_prevents_a_takeover() -> None:
    net = settled()
    for other in (N2, N3, N4):
        net.cut.update({(other, N1), (N1, other)})
    net.run(5.0)
    assert net.holders() == {N1}


def test_an_owner_that_cannot_carry_the_vip_is_replaced() -> None:
    net = settled()
    net.speakers[N1].set_cannot_carry(frozenset({VIP}), net.now)
    net.until(lambda: net.holders() == {N2}, 1.0)
    assert net.speakers[N1].verdicts[VIP] is Verdict.CANNOT_CARRY


def test_an_isolated_node_withdraws_after_three_seconds() -> None:
    net = settled()
    speaker = net.speakers[N1]
    net.dead.update({N2, N3, N4})
    for _ in range(40):
        net.now += PROBE_INTERVAL
        speaker.tick(net.now)  # no api_ok: the API is cut too
        if not speaker.held:
            break
    assert not speaker.held and speaker.verdicts[VIP] is Verdict.ISOLATED
    assert net.now - 1.0 < 3.0 + 2 * PROBE_INTERVAL


def test_a_node_still_reaching_peers_keeps_announcing_without_the_api() -> None:
    net = settled()
    speaker = net.speakers[N1]
    start = net.now
    for _ in range(100):  # 10 s: monitors keep probing it, the API never answers
        net.now += PROBE_INTERVAL
        for name in (N2, N3):
            for target in net.speakers[name].tick(net.now).probes:
                net.probe(name, target)
        speaker.tick(net.now)
    assert net.now - start >= 9.9 and speaker.held


@pytest.mark.parametrize(
    ("mine_fresh", "theirs_fresh", "other", "yields"),
    [
        pytest.param(True, True, N1, True, id="equally-fresh-higher-rank-keeps"),
        pytest.param(True, True, N3, False, id="equally-fresh-lower-rank-yields"),
        pytest.param(False, True, N3, True, id="stale-yields-to-fresh"),
        pytest.param(True, False, N1, False, id="fresh-keeps-against-stale"),
        pytest.param(False, False, N1, True, id="equally-stale-rank-decides"),
    ],
)
def test_conflicts_between_speakers(
    mine_fresh: bool, theirs_fresh: bool, other: NodeName, yields: bool
) -> None:
    speaker = Liveness(N2, 0.0)
    speaker.set_groups([GROUP], 0.0)
    speaker.held[VIP] = 3
    assert speaker.on_conflict(VIP, other, theirs_fresh, mine_fresh) is yields
    assert (VIP in speaker.held) is not yields


@pytest.mark.parametrize(
    ("mine_fresh", "theirs_fresh", "other", "yields"),
    [
        pytest.param(True, True, N1, True, id="equally-fresh-higher-rank-keeps"),
        pytest.param(True, True, N3, False, id="equally-fresh-lower-rank-yields"),
        pytest.param(False, True, N3, True, id="stale-yields-to-fresh"),
        pytest.param(True, False, N1, False, id="fresh-keeps-against-stale"),
    ],
)
def test_a_report_holding_a_group_at_the_same_epoch_settles_it_by_the_conflict_rule(
    mine_fresh: bool, theirs_fresh: bool, other: NodeName, yields: bool
) -> None:
    """Both took the group at the same epoch, neither hearing of the other in time (a node
    that started late, a monitor that took over meanwhile). Frames on the wire settle it only
    where both announce on one segment; the reports settle it everywhere, by the same rule."""
    speaker = Liveness(N2, 0.0)
    speaker.set_groups([GROUP], 0.0)
    speaker.fresh = mine_fresh
    speaker.held[VIP] = 1
    theirs = Liveness(other, 0.0)
    theirs.set_groups([GROUP], 0.0)
    theirs.held[VIP] = 1
    speaker.on_report(theirs.report(fresh=theirs_fresh), 1.0, ack=True)
    assert (VIP in speaker.held) is not yields


def test_two_holders_at_one_epoch_end_with_the_owner_alone() -> None:
    net = Net.of()
    for name in (N1, N2):
        net.speakers[name].held[VIP] = 1
    net.until(lambda: net.holders() == {N1}, 1.0)
    net.run(HANDBACK_AFTER + 1.0)
    assert net.holders() == {N1}


def test_groups_are_independent_and_follow_their_own_ranking() -> None:
    other = ipaddress.ip_address("192.0.2.201")
    second = Group(other, (other,), (N3, N1, N2))
    net = Net.of(groups=(GROUP, second))
    net.run(1.0)
    owners: dict[IPAddress, set[NodeName]] = {VIP: set(), other: set()}
    for name, speaker in net.speakers.items():
        for key in speaker.holding():
            owners[key].add(name)
    assert owners == {VIP: {N1}, other: {N3}}


def test_a_monitor_whose_loop_lags_counts_no_misses() -> None:
    two = Group(VIP, (VIP,), (N1, N2))
    net = Net.of(nodes=(N1, N2), groups=(two,))
    net.run(1.0)
    net.cut.add((N1, N2))  # acks lost: only the lag keeps rank 2 from a takeover
    net.arp_answers = False
    net.lags[N2] = 2 * PROBE_INTERVAL
    net.run(2.5)
    assert net.holders() == {N1}, "a lagging monitor must not declare the owner dead"
    net.lags[N2] = 0.0
    net.run(2.0)
    # Once its loop keeps up, the same losses mean a takeover; the owner hears the newer epoch
    # in rank 2's probes and yields.
    assert net.holders() == {N2}


@pytest.mark.parametrize(
    ("lag", "keeps"),
    [pytest.param(0.3, True, id="short-lag-keeps"), pytest.param(0.6, False, id="stall-drops")],
)
def test_a_holder_whose_loop_stalled_drops_what_it_holds(lag: float, keeps: bool) -> None:
    speaker = Liveness(N1, 0.0)
    speaker.set_groups([GROUP], 0.0)
    speaker.tick(1.0)
    assert speaker.held
    speaker.on_lag(lag, 1.0 + lag)
    assert bool(speaker.held) is keeps


def test_a_new_rank_one_takes_at_once_when_the_old_owner_left_the_ranking() -> None:
    """The owner's node went NotReady: the plan drops it, rank 2 becomes rank 1 and must not
    wait for a hand-back from a node that is no longer eligible."""
    net = settled()
    shrunk = Group(VIP, (VIP,), RANKING[1:])
    for speaker in net.speakers.values():
        speaker.set_groups([shrunk], net.now)
    took = net.until(lambda: net.holders() == {N2}, 2.0)
    assert took <= 2 * PROBE_INTERVAL


def test_a_rank_one_back_from_a_stall_takes_its_group_when_nobody_else_holds_it() -> None:
    net = settled()
    net.pause(N1)
    net.until(lambda: N2 in net.holders(), 2.0)
    net.speakers[N2].set_groups([Group(VIP, (VIP,), (N1, N3, N4))], net.now)  # N2 left
    net.resume(N1)
    net.until(lambda: net.holders() == {N1}, 1.5)


def test_a_returning_owner_takes_over_at_once_when_the_acting_owner_dies() -> None:
    """Rank 1 came back and waits for the hand-back; the acting owner dies meanwhile: rank 1
    monitors it like a monitor does and takes over within the usual time, not HOLDER_TIMEOUT."""
    net = settled()
    net.pause(N1)
    net.until(lambda: net.holders() == {N2}, 2.0)
    net.resume(N1)
    net.run(1.0)
    assert net.speakers[N1].verdicts[VIP] is Verdict.RETURNING
    net.dead.add(N2)
    took = net.until(lambda: net.holders() == {N1}, 2.0)
    assert took <= 0.85 + 1e-9, took  # 5 misses (0.5 s), the 0.2 s check, the tick grain
