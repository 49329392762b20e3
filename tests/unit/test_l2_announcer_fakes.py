"""Layer2Announcer's behaviour with fake sockets (socket pairs the test writes frames into) and a
fake interface view: what it holds, announces, answers, reports and probes."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_interface

import pytest
import pytest_asyncio

from lbctl.lab.l2probe import who_has
from speaker.announcers.layer2 import (
    AnnounceError,
    HoldFailure,
    Interface,
    Layer2Announcer,
    Layer2Hooks,
    Link,
    frames,
    mac_address,
)
from speaker.announcers.layer2.announcer import SLICE

MAC0 = mac_address("02:00:00:00:01:01")
MAC1 = mac_address("02:00:00:00:01:02")
OTHER = mac_address("02:00:00:00:01:09")
ASKER = mac_address("02:00:00:00:02:64")
VIP4 = IPv4Address("192.0.2.200")
VIP4B = IPv4Address("198.51.100.77")
VIP6 = IPv6Address("2001:db8::200")
ETH0 = Interface(
    Link("eth0", 2, MAC0), (ip_interface("192.0.2.11/24"), ip_interface("2001:db8::11/64")), True
)
ETH1 = Interface(Link("eth1", 3, MAC1), (ip_interface("198.51.100.5/25"),), True)
INTERVAL = 0.02  # the burst, scaled down 55 times: 5 frames in 0.09 s


class FakeView:
    """An interface view the test edits; subscribers hear every change."""

    def __init__(self, *interfaces: Interface) -> None:
        self.interfaces: tuple[Interface, ...] = interfaces
        self._subscribers: list[Callable[[tuple[Interface, ...]], None]] = []

    def subscribe(self, on_change: Callable[[tuple[Interface, ...]], None]) -> None:
        self._subscribers.append(on_change)

    def change(self, *interfaces: Interface) -> None:
        self.interfaces = interfaces
        for on_change in self._subscribers:
            on_change(interfaces)


@dataclass
class FakeSocket:
    """One end of a socket pair: the announcer reads it; `inject` writes frames to it."""

    link: Link
    sent: list[bytes] = field(default_factory=list)
    groups: set[IPv6Address] = field(default_factory=set)
    closed: bool = False

    def __post_init__(self) -> None:
        self._mine, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._mine.setblocking(False)

    def fileno(self) -> int:
        return self._mine.fileno()

    def send(self, frame: bytes) -> None:
        if self.closed:
            raise AnnounceError(f"sending on closed {self.link.name}")
        self.sent.append(frame)

    def receive(self, limit: int = 256) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < limit:
            try:
                out.append(self._mine.recv(2048))
            except BlockingIOError:
                break
        return out

    def join(self, vip: IPv6Address) -> None:
        self.groups.add(vip)

    def leave(self, vip: IPv6Address) -> None:
        self.groups.discard(vip)

    def close(self) -> None:
        self.closed = True
        self._mine.close()
        self._theirs.close()

    def inject(self, frame: bytes) -> None:
        self._theirs.send(frame)


@dataclass
class Recorder:
    """Hook calls, in order."""

    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)

    def hooks(self) -> Layer2Hooks:
        def rec(name: str) -> Callable[..., None]:
            return lambda *args: self.calls.append((name, args))

        return Layer2Hooks(rec("announce"), rec("request"), rec("answer"), rec("foreign"))

    def of(self, name: str) -> list[tuple[object, ...]]:
        return [args for kind, args in self.calls if kind == name]


@dataclass
class Bench:
    announcer: Layer2Announcer
    view: FakeView
    sockets: list[FakeSocket]
    hooks: Recorder
    fail_open: set[str] = field(default_factory=set)

    def socket_for(self, name: str) -> FakeSocket:
        return next(s for s in reversed(self.sockets) if s.link.name == name and not s.closed)


@pytest_asyncio.fixture
async def bench() -> AsyncIterator[Bench]:
    view = FakeView(ETH0, ETH1)
    recorder = Recorder()
    opened: list[FakeSocket] = []
    failing: set[str] = set()

    def open_socket(link: Link) -> FakeSocket:
        if link.name in failing:
            raise AnnounceError(f"opening ARP/NDP socket on {link.name!r}")
        opened.append(FakeSocket(link))
        return opened[-1]

    announcer = Layer2Announcer(
        recorder.hooks(),
        interfaces=view,
        open_socket=open_socket,
        burst_interval=INTERVAL,
        burst_span=4.5 * INTERVAL,
    )
    await announcer.start()
    yield Bench(announcer, view, opened, recorder, failing)
    await announcer.stop()


async def settle(seconds: float = 0.01) -> None:
    await asyncio.sleep(seconds)


def unicast(sock: FakeSocket) -> list[bytes]:
    """Frames sent to one station (replies), without the burst's broadcast announcements."""
    return [f for f in sock.sent if f[:6] not in (b"\xff" * 6, bytes.fromhex("333300000001"))]


def arp_ask(vip: IPv4Address) -> bytes:
    return who_has(ASKER, IPv4Address("192.0.2.100"), vip)


# -- holding and announcing ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_new_vip_is_announced_at_once_then_in_a_burst(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    eth0 = bench.socket_for("eth0")
    assert eth0.sent == [frames.gratuitous_arp(MAC0, VIP4)], "the first GARP goes out in sync()"
    await settle(8 * INTERVAL)
    assert eth0.sent == [frames.gratuitous_arp(MAC0, VIP4)] * 5
    assert bench.hooks.of("announce") == [(VIP4, "eth0")] * 5


@pytest.mark.asyncio
async def test_an_ipv6_vip_is_announced_by_unsolicited_na_and_joins_its_group(
    bench: Bench,
) -> None:
    bench.announcer.sync({VIP6: "eth0"})
    eth0 = bench.socket_for("eth0")
    assert eth0.sent == [frames.unsolicited_na(MAC0, VIP6)]
    assert eth0.groups == {VIP6}
    bench.announcer.sync({VIP4: "eth0"})
    assert eth0.groups == set()


@pytest.mark.asyncio
async def test_a_released_vip_stops_its_burst(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0", VIP4B: "eth1"})
    eth0 = bench.socket_for("eth0")
    await settle(1.5 * INTERVAL)
    bench.announcer.sync({VIP4B: "eth1"})
    count = len(eth0.sent)
    await settle(8 * INTERVAL)
    assert 1 <= len(eth0.sent) == count < 5


@pytest.mark.asyncio
async def test_syncing_the_same_state_again_sends_nothing(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    await settle(8 * INTERVAL)
    before = len(bench.socket_for("eth0").sent)
    bench.announcer.sync({VIP4: "eth0"})
    await settle(2 * INTERVAL)
    assert len(bench.socket_for("eth0").sent) == before


@pytest.mark.asyncio
async def test_reannounce_starts_a_fresh_burst(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    await settle(8 * INTERVAL)
    bench.announcer.reannounce(VIP4)
    await settle(8 * INTERVAL)
    assert len(bench.socket_for("eth0").sent) == 10
    with pytest.raises(KeyError):
        bench.announcer.reannounce(VIP6)


@pytest.mark.asyncio
async def test_a_vip_that_moves_interface_is_announced_on_the_new_one(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    bench.announcer.sync({VIP4: "eth1"})
    assert bench.sockets[0].closed, "eth0 carries no VIP any more"
    assert bench.socket_for("eth1").sent == [frames.gratuitous_arp(MAC1, VIP4)]
    assert dict(bench.announcer.held) == {VIP4: ETH1.link}


@pytest.mark.asyncio
async def test_sockets_open_with_the_first_vip_and_close_with_the_last(bench: Bench) -> None:
    assert bench.sockets == []
    bench.announcer.sync({VIP4: "eth0", VIP6: "eth0"})
    assert [s.link.name for s in bench.sockets] == ["eth0"]
    bench.announcer.sync({VIP6: "eth0"})
    assert not bench.sockets[0].closed
    bench.announcer.sync({})
    assert bench.sockets[0].closed


# -- large changes -------------------------------------------------------------------------------

MANY = [IPv6Address(int(VIP6) + i) for i in range(1, 3 * SLICE + 1)]


async def worked_through(bench: Bench, turns: int = 100) -> None:
    """Let the loop turn until the announcer has no queued work (bounded)."""
    for _ in range(turns):
        if not bench.announcer.settling:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{bench.announcer.settling} VIPs still settling after {turns} turns")


@pytest.mark.asyncio
async def test_a_large_change_is_answered_at_once_and_worked_through_in_slices(
    bench: Bench,
) -> None:
    bench.announcer.sync(dict.fromkeys(MANY, "eth0"))
    eth0 = bench.socket_for("eth0")
    assert set(bench.announcer.held) == set(MANY), "every VIP is answered for at once"
    assert (len(eth0.groups), len(eth0.sent)) == (SLICE, SLICE), "one slice before sync returns"
    between: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: between.append(len(eth0.groups)))
    await worked_through(bench)
    assert between == [2 * SLICE], "other callbacks run between slices"
    assert eth0.groups == set(MANY)
    assert sorted(eth0.sent) == sorted(frames.unsolicited_na(MAC0, v) for v in MANY)


@pytest.mark.asyncio
async def test_a_large_release_stops_answering_at_once_and_leaves_in_slices(bench: Bench) -> None:
    bench.announcer.sync(dict.fromkeys(MANY, "eth0"))
    await worked_through(bench)
    eth0 = bench.socket_for("eth0")
    eth0.inject(frames.neighbor_solicitation(ASKER, IPv6Address("2001:db8::64"), MANY[-1]))
    bench.announcer.sync({})
    assert dict(bench.announcer.held) == {}
    assert (len(eth0.groups), eth0.closed) == (len(MANY) - SLICE, False), (
        "the socket stays open until its groups are left, slice by slice"
    )
    await worked_through(bench)
    assert unicast(eth0) == [], "a released VIP is not answered while its group is still joined"
    assert (eth0.groups, eth0.closed) == (set(), True)


@pytest.mark.asyncio
async def test_vips_dropped_and_taken_back_before_the_work_is_done_end_joined(
    bench: Bench,
) -> None:
    everything: dict[IPv4Address | IPv6Address, str] = dict.fromkeys(MANY, "eth0")
    bench.announcer.sync(everything)
    await worked_through(bench)
    eth0 = bench.socket_for("eth0")
    bench.announcer.sync({VIP4: "eth0"})
    bench.announcer.sync({**everything, VIP4: "eth0"})
    await worked_through(bench)
    assert eth0.groups == set(MANY)
    assert set(bench.announcer.held) == {*MANY, VIP4}


@pytest.mark.asyncio
async def test_every_vip_of_a_large_change_gets_its_whole_burst(bench: Bench) -> None:
    bench.announcer.sync(dict.fromkeys(MANY, "eth0"))
    await settle(8 * INTERVAL)
    eth0 = bench.socket_for("eth0")
    assert sorted(eth0.sent) == sorted(frames.unsolicited_na(MAC0, v) for v in MANY * 5)


@pytest.mark.asyncio
async def test_updates_of_a_few_vips_end_where_syncing_the_whole_state_would(bench: Bench) -> None:
    rng = random.Random(7)
    vips: list[IPv4Address | IPv6Address] = [*MANY[:20], VIP4, VIP4B]
    desired: dict[IPv4Address | IPv6Address, str] = {}
    links = {"eth0": ETH0.link, "eth1": ETH1.link}
    for _ in range(60):
        changes = {v: rng.choice(["eth0", "eth1", "eth9", None]) for v in rng.sample(vips, 4)}
        bench.announcer.update(changes)
        desired = {v: n for v, n in {**desired, **changes}.items() if n is not None}
        assert dict(bench.announcer.held) == {v: links[n] for v, n in desired.items() if n in links}
        assert dict(bench.announcer.unheld) == {
            v: HoldFailure.INTERFACE_MISSING for v, n in desired.items() if n == "eth9"
        }
    await worked_through(bench)
    groups = {v for s in bench.sockets if not s.closed for v in s.groups}
    assert groups == {v for v, n in desired.items() if n in links and isinstance(v, IPv6Address)}


# -- what cannot be held, and why ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_unheld_vips_carry_their_reason(bench: Bench) -> None:
    down = Interface(Link("eth2", 4, OTHER), (), False)
    bench.view.change(ETH0, ETH1, down)
    bench.fail_open.add("eth1")
    bench.announcer.sync({VIP4: "eth9", VIP6: "eth2", VIP4B: "eth1"})
    assert dict(bench.announcer.unheld) == {
        VIP4: HoldFailure.INTERFACE_MISSING,
        VIP6: HoldFailure.INTERFACE_DOWN,
        VIP4B: HoldFailure.SOCKET_FAILED,
    }
    assert bench.announcer.held == {}


@pytest.mark.asyncio
async def test_an_interface_that_comes_up_gets_its_vips_announced(bench: Bench) -> None:
    down = Interface(Link("eth1", 3, MAC1), ETH1.addresses, False)
    bench.view.change(ETH0, down)
    bench.announcer.sync({VIP4B: "eth1"})
    assert bench.sockets == []
    bench.view.change(ETH0, ETH1)
    assert bench.socket_for("eth1").sent == [frames.gratuitous_arp(MAC1, VIP4B)]
    assert bench.announcer.unheld == {}


@pytest.mark.asyncio
async def test_a_new_mac_reopens_the_socket_and_announces_it(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    renamed = Interface(Link("eth0", 2, OTHER), ETH0.addresses, True)
    bench.view.change(renamed, ETH1)
    old, new = bench.sockets
    assert old.closed and not new.closed
    assert new.sent == [frames.gratuitous_arp(OTHER, VIP4)]


# -- answering -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_requests_are_answered_only_for_held_vips_on_their_interface(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0", VIP4B: "eth1"})
    eth0, eth1 = bench.socket_for("eth0"), bench.socket_for("eth1")
    eth0.inject(arp_ask(VIP4))  # held here: answered
    eth1.inject(arp_ask(VIP4))  # held, but on eth0: not answered
    eth0.inject(arp_ask(IPv4Address("192.0.2.201")))  # not held: ignored
    await settle()
    request = frames.ArpRequest(ASKER, IPv4Address("192.0.2.100"), VIP4)
    assert unicast(eth0) == [frames.arp_reply(MAC0, request)]
    assert unicast(eth1) == []
    assert bench.hooks.of("request") == [(VIP4, "eth0"), (VIP4, "eth1")]
    assert bench.hooks.of("answer") == [(VIP4, "eth0")]


@pytest.mark.asyncio
async def test_a_neighbor_solicitation_gets_a_solicited_advertisement(bench: Bench) -> None:
    bench.announcer.sync({VIP6: "eth0"})
    eth0 = bench.socket_for("eth0")
    eth0.inject(who_has(ASKER, IPv6Address("2001:db8::100"), VIP6))
    await settle()
    [reply] = unicast(eth0)
    adv = frames.parse_advertisement(reply)
    assert adv is not None
    assert (adv.dst, adv.solicited, adv.override) == (IPv6Address("2001:db8::100"), True, True)


@pytest.mark.asyncio
async def test_a_released_vip_is_not_answered_even_if_asked_before_release(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0", VIP4B: "eth0"})
    eth0 = bench.socket_for("eth0")
    eth0.inject(arp_ask(VIP4))  # queued, not read yet: the loop has not run
    bench.announcer.sync({VIP4B: "eth0"})
    await settle()
    assert unicast(eth0) == []


@pytest.mark.asyncio
async def test_discard_pending_drops_queued_requests_unanswered(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    eth0 = bench.socket_for("eth0")
    for _ in range(3):
        eth0.inject(arp_ask(VIP4))
    assert bench.announcer.discard_pending() == 3
    await settle()
    assert unicast(eth0) == []


@pytest.mark.asyncio
async def test_while_the_owner_is_not_awake_nothing_is_answered_or_announced(
    bench: Bench,
) -> None:
    """After a stall, frames queued during it and burst frames due during it are dropped
    until the owner has ticked (Layer2Hooks.awake); then requests are answered again."""
    awake = False
    bench.announcer.hooks = dataclasses.replace(bench.announcer.hooks, awake=lambda: awake)
    awake = True
    bench.announcer.sync({VIP4: "eth0"})
    eth0 = bench.socket_for("eth0")
    assert len(eth0.sent) == 1  # the burst's first frame, sent while awake
    awake = False
    eth0.inject(arp_ask(VIP4))
    await settle(8 * INTERVAL)
    assert eth0.sent == [frames.gratuitous_arp(MAC0, VIP4)], "no reply, no later burst frame"
    assert bench.hooks.of("answer") == []
    awake = True
    eth0.inject(arp_ask(VIP4))
    await settle()
    assert len(unicast(eth0)) == 1, "the request sent after the owner woke is answered"


@pytest.mark.asyncio
async def test_garbage_frames_are_ignored_and_later_ones_answered(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0"})
    eth0 = bench.socket_for("eth0")
    eth0.inject(b"\x00" * 5)
    eth0.inject(arp_ask(VIP4))
    await settle()
    assert len(unicast(eth0)) == 1


# -- foreign claims ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_another_mac_claiming_a_held_vip_is_reported(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0", VIP6: "eth0"})
    eth0 = bench.socket_for("eth0")
    eth0.inject(frames.gratuitous_arp(OTHER, VIP4))
    eth0.inject(frames.unsolicited_na(OTHER, VIP6))
    eth0.inject(frames.gratuitous_arp(MAC0, VIP4))  # our own MAC: not foreign
    eth0.inject(frames.gratuitous_arp(OTHER, IPv4Address("192.0.2.201")))  # not held here
    await settle()
    assert bench.hooks.of("foreign") == [(VIP4, OTHER, "eth0"), (VIP6, OTHER, "eth0")]


# -- probing -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_probe_reports_every_mac_that_answers(bench: Bench) -> None:
    task = asyncio.create_task(bench.announcer.probe(VIP4, window=0.05))
    await settle(0.005)
    eth0 = bench.socket_for("eth0")
    probe = frames.arp_probe(MAC0, VIP4)
    request = frames.ArpRequest(MAC0, IPv4Address("0.0.0.0"), VIP4)
    eth0.inject(frames.arp_reply(OTHER, request))
    eth0.inject(frames.arp_reply(ASKER, request))
    result = await task
    assert (result.answered, result.answered_by, result.interface) == (
        True,
        frozenset({OTHER, ASKER}),
        "eth0",
    )
    assert eth0.sent == [probe] * 3
    assert eth0.closed, "a socket opened only for the probe is closed after it"
    assert bench.hooks.of("foreign") == [], "a VIP not held here is nobody's conflict"


@pytest.mark.asyncio
async def test_probe_for_an_unused_vip_reports_nobody(bench: Bench) -> None:
    result = await bench.announcer.probe(VIP6, window=0.03)
    assert not result
    assert result.answered_by == frozenset()
    assert bench.sockets[0].sent == [frames.dad_solicitation(MAC0, VIP6)] * 3


@pytest.mark.asyncio
async def test_probe_without_an_interface_raises(bench: Bench) -> None:
    with pytest.raises(AnnounceError, match="no up interface"):
        await bench.announcer.probe(IPv4Address("10.9.9.9"))


# -- what the speaker reads ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_interface_for_and_macs_read_the_view(bench: Bench) -> None:
    assert bench.announcer.interface_for(VIP4) == "eth0"
    assert bench.announcer.interface_for(VIP4, ("eth1",)) == "eth1"
    assert bench.announcer.interface_for(IPv4Address("10.9.9.9")) is None
    assert bench.announcer.macs() == (MAC0, MAC1)


@pytest.mark.asyncio
async def test_stop_closes_every_socket_and_forgets_what_was_held(bench: Bench) -> None:
    bench.announcer.sync({VIP4: "eth0", VIP4B: "eth1"})
    await bench.announcer.stop()
    assert all(s.closed for s in bench.sockets)
    assert bench.announcer.held == {}
    with pytest.raises(RuntimeError, match="before start"):
        bench.announcer.sync({VIP4: "eth0"})
    await bench.announcer.start()  # the fixture stops it again


def test_sync_before_start_is_refused() -> None:
    announcer = Layer2Announcer(interfaces=FakeView(ETH0))
    with pytest.raises(RuntimeError, match="before start"):
        announcer.sync({VIP4: "eth0"})
