"""Liveness decides only what a change touches (a plan's difference, a report's holders, a
hand-back, the groups waiting on time): on random runs of the simulated network, with nodes
dying, coming back and plans changing, every speaker's state equals that of a twin fed the same
inputs that takes every plan whole and decides every group each time."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from test_liveness import RANKING, VIP, Net

from lbctl.core.liveness import Liveness
from lbctl.core.liveness_types import Actions, Group, Report
from lbctl.core.model import IPAddress, NodeName


class Checked(Liveness):
    """A Liveness with a twin that gets the same inputs but whole plans and whole decisions
    (set_groups); after every input the two must agree."""

    def __init__(self, me: NodeName, now: float) -> None:
        super().__init__(me, now)
        self.twin = Liveness(me, now)
        self.twin_decides_all = True

    def _both(self, name: str, *args: Any, **kwargs: Any) -> Any:
        out = getattr(super(), name)(*args, **kwargs)
        twin_out = getattr(self.twin, name)(*args, **kwargs)
        self.agree()
        return out, twin_out

    def agree(self) -> None:
        mine, twin = self, self.twin
        assert mine.groups == twin.groups
        assert dict(mine.held) == dict(twin.held), "held"
        assert {k: mine.verdicts[k] for k in mine.groups} == {
            k: twin.verdicts[k] for k in twin.groups
        }, "verdicts"
        assert set(mine.verdicts) <= set(mine.groups) | set(twin.verdicts)
        assert set(mine.peers) == set(twin.peers), "peers"
        assert mine.holders == twin.holders
        assert mine._waiting == twin._waiting and mine._acting == twin._acting

    # every input goes to both
    def update_groups(self, changes: Mapping[IPAddress, Group | None], now: float) -> None:
        super().update_groups(changes, now)
        self.twin.set_groups(self.groups.values(), now)
        self.agree()

    def api_ok(self, now: float) -> None:
        self._both("api_ok", now)

    def on_report(self, report: Report, now: float, *, ack: bool) -> None:
        self._both("on_report", report, now, ack=ack)

    def on_check(self, node: NodeName, now: float) -> None:
        self._both("on_check", node, now)

    def on_handback(self, keys: Iterable[IPAddress], now: float) -> None:
        keys = tuple(keys)
        self._both("on_handback", keys, now)

    def on_lag(self, lag: float, now: float) -> None:
        self._both("on_lag", lag, now)

    def tick(self, now: float) -> Actions:
        actions, twin_actions = self._both("tick", now)
        assert actions == twin_actions
        return actions  # type: ignore[no-any-return]


def random_group(rng: random.Random, key: IPAddress) -> Group:
    ranking = list(RANKING)
    rng.shuffle(ranking)
    return Group(key, (key,), tuple(ranking[: rng.randint(1, len(ranking))]))


def change(net: Net, rng: random.Random, keys: list[IPAddress]) -> None:
    """The same random plan change (groups added, re-ranked, removed) on every speaker."""
    current = next(iter(net.speakers.values())).groups
    changes: dict[IPAddress, Group | None] = {}
    for key in rng.sample(keys, rng.randint(1, 4)):
        gone = key in current and rng.random() < 0.3
        changes[key] = None if gone else random_group(rng, key)
    for speaker in net.speakers.values():
        speaker.update_groups(changes, net.now)


@pytest.mark.parametrize("seed", range(8))
def test_deciding_what_changed_equals_deciding_everything(seed: int) -> None:
    rng = random.Random(seed)
    keys = [ipaddress.ip_address(f"192.0.2.{i}") for i in range(1, 13)]
    net = Net()
    groups = (Group(VIP, (VIP,), RANKING), *(random_group(rng, k) for k in keys[:6]))
    for name in RANKING:
        speaker = Checked(name, 0.0)
        speaker.set_groups(groups, 0.0)
        speaker.twin.set_groups(groups, 0.0)
        net.speakers[name] = speaker
    for _ in range(300):
        roll = rng.random()
        if roll < 0.08:
            change(net, rng, keys)
        elif roll < 0.11:
            net.dead.add(rng.choice(RANKING))
        elif roll < 0.16 and net.dead:
            net.dead.discard(rng.choice(sorted(net.dead)))
        net.step()
    assert any(s.held for s in net.speakers.values())
