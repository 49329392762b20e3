"""The layer-2 announcer with real packets on the bed's topology (no control plane): the client's
kernel resolves a VIP to the holder's MAC, a move updates its existing neighbour entry through
the GARP / unsolicited-NA burst, only held VIPs are answered and only on their interface, the
interface view follows netlink, and probe() tells who holds a VIP.

The announcers of node-1 and node-2 run on one asyncio loop on a thread of the test's; their
sockets are made inside each node's namespace (nsutil.run_in_netns)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from lbctl.lab import nsutil
from lbctl.lab.l2probe import VipObserver, open_raw
from lbctl.lab.procs import wait_for
from lbctl.lab.topology import NodeMember, Topology
from speaker.announcers.layer2 import (
    Interface,
    InterfaceView,
    IPAddress,
    Layer2Announcer,
    Layer2Hooks,
    Link,
    frames,
    mac_address,
)
from speaker.announcers.layer2.sockets import PacketSocket

T = TypeVar("T")
PORT = 8080
SIDE = "side0"  # a second link: node-1 <-> observer, nobody else on it
SIDE_NODE_MAC = "02:00:00:00:05:01"
SIDE_OBSERVER_MAC = "02:00:00:00:05:02"
SIDE6 = ipaddress.IPv6Interface("2001:db8:5::1/64")
ETH0 = "eth0"
MEASURED: dict[str, float] = {}


# -- scaffolding: one loop for the announcers, hooks that record -------------------------------


class LoopThread:
    """An asyncio loop on a daemon thread, where the announcers live (test scaffolding)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="l2-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def body() -> T:
            return fn(*args)

        return self.run(body())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        self.loop.close()


@dataclass
class Recorded:
    """Every hook call of one announcer, with its monotonic time."""

    calls: list[tuple[float, str, tuple[object, ...]]] = field(default_factory=list)

    def hooks(self) -> Layer2Hooks:
        def rec(name: str) -> Callable[..., None]:
            return lambda *args: self.calls.append((time.monotonic(), name, args))

        return Layer2Hooks(rec("announce"), rec("request"), rec("answer"), rec("foreign"))

    def of(self, name: str) -> list[tuple[object, ...]]:
        return [args for _, kind, args in list(self.calls) if kind == name]


def in_netns_of(netns: str) -> Callable[[Callable[[], T]], T]:
    def run(make: Callable[[], T]) -> T:
        return nsutil.run_in_netns(netns, make)

    return run


@dataclass
class Node:
    member: NodeMember
    announcer: Layer2Announcer
    recorded: Recorded

    @property
    def mac(self) -> str:
        return self.member.host.mac

    def hold(self, loop: LoopThread, desired: dict[IPAddress, str]) -> None:
        loop.call(self.announcer.sync, desired)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with Topology(nodes=2) as topology:
        node1, observer = topology.nodes[0].netns, topology.observer.netns
        nsutil.ip_batch(
            node1,
            [
                f"link add {SIDE} address {SIDE_NODE_MAC} type veth peer name {SIDE} "
                f"address {SIDE_OBSERVER_MAC} netns {observer}",
                f"addr add {SIDE6} dev {SIDE} nodad",
                f"link set {SIDE} up",
            ],
        )
        nsutil.ip("link", "set", SIDE, "up", netns=observer)
        yield topology


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def nodes(topo: Topology, loop: LoopThread) -> Iterator[list[Node]]:
    """Started announcers for node-1 and node-2, stopped after the test."""
    made = []
    for member in topo.nodes:
        recorded = Recorded()
        announcer = Layer2Announcer(recorded.hooks(), in_netns=in_netns_of(member.netns))
        loop.run(announcer.start())
        made.append(Node(member, announcer, recorded))
    yield made
    for node in made:
        loop.run(node.announcer.stop())


# -- helpers --------------------------------------------------------------------------------------


def routable_on(node: NodeMember, vip: IPAddress) -> None:
    """What kube-proxy would do: the node accepts the VIP's traffic (its kernel, arp_ignore=1 and
    no NDP for a route, does not answer ARP/NDP for it: the announcer does)."""
    nsutil.ip("route", "add", "local", f"{vip}/{vip.max_prefixlen}", "dev", "lo", netns=node.netns)


def neighbour_mac(topo: Topology, vip: IPAddress) -> str | None:
    out = nsutil.ip("neigh", "show", str(vip), netns=topo.client.netns)
    found = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return found.group(1) if found else None


@contextlib.contextmanager
def listening(node: NodeMember, vip: IPAddress) -> Iterator[socket.socket]:
    sock = nsutil.listen_tcp_in_netns(node.netns, str(vip), PORT, freebind=True)
    try:
        yield sock
    finally:
        sock.close()


def accepted(sock: socket.socket) -> bool:
    """Whether a connection waits on a (non-blocking) listener; accepts and closes it."""
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def connect_from_client(topo: Topology, vip: IPAddress) -> float:
    start = time.monotonic()
    nsutil.connect_tcp_in_netns(topo.client.netns, str(vip), PORT, timeout=3.0).close()
    return time.monotonic() - start


def observe(
    topo: Topology, vip: IPAddress, seconds: float, ifname: str = ETH0
) -> list[frozenset[str]]:
    """The MACs answering each round of the observer's who-has / NS over `seconds`."""
    if ifname == ETH0:
        observer = topo.observe(str(vip))
    else:
        observer = VipObserver(
            topo.observer.netns, vip, src_mac=SIDE_OBSERVER_MAC,
            src_ip4="203.0.113.250", src_ip6="2001:db8:5::2", ifname=ifname,
        )  # fmt: skip
    with observer:
        time.sleep(seconds)
    return [tick.macs for tick in observer.ticks()]


VIPS = [
    pytest.param(ipaddress.ip_address("192.0.2.201"), id="ipv4"),
    pytest.param(ipaddress.ip_address("2001:db8::201"), id="ipv6"),
]
MOVES = [  # the pause since the client's entry was last confirmed: neigh locktime is 1 s
    pytest.param(ipaddress.ip_address("192.0.2.202"), 1.1, id="ipv4-garp"),
    pytest.param(ipaddress.ip_address("192.0.2.212"), 0.0, id="ipv4-garp-within-locktime"),
    pytest.param(ipaddress.ip_address("2001:db8::202"), 1.1, id="ipv6-unsolicited-na"),
    pytest.param(ipaddress.ip_address("2001:db8::212"), 0.0, id="ipv6-na-within-locktime"),
]
PROBED = [
    pytest.param(
        ipaddress.ip_address("192.0.2.203"), ipaddress.ip_address("192.0.2.213"), id="ipv4"
    ),
    pytest.param(
        ipaddress.ip_address("2001:db8::203"), ipaddress.ip_address("2001:db8::213"), id="ipv6"
    ),
]


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vip", VIPS)
def test_client_resolves_the_vip_to_the_holder_and_exactly_one_mac_answers(
    topo: Topology, loop: LoopThread, nodes: list[Node], vip: IPAddress
) -> None:
    node1, node2 = nodes
    for node in nodes:
        routable_on(node.member, vip)
    with listening(node1.member, vip) as on1, listening(node2.member, vip) as on2:
        node1.hold(loop, {vip: ETH0})
        MEASURED[f"connect_{vip.version}"] = connect_from_client(topo, vip)
        assert accepted(on1) and not accepted(on2)
    assert neighbour_mac(topo, vip) == node1.mac
    rounds = observe(topo, vip, 0.6)
    assert len(rounds) >= 4
    assert all(macs == {node1.mac} for macs in rounds), rounds
    assert node1.recorded.of("answer"), "the client's and observer's requests were answered"
    assert node2.recorded.of("answer") == []


@pytest.mark.parametrize(("vip", "pause"), MOVES)
def test_moving_the_vip_updates_the_client_entry_through_the_burst(
    topo: Topology, loop: LoopThread, nodes: list[Node], vip: IPAddress, pause: float
) -> None:
    """Linux takes a gratuitous ARP even within locktime (it overrides for GARPs), and an NA
    with Override at any time; so the first frame of the burst does it."""
    node1, node2 = nodes
    for node in nodes:
        routable_on(node.member, vip)
    with listening(node1.member, vip) as on1, listening(node2.member, vip) as on2:
        node1.hold(loop, {vip: ETH0})
        connect_from_client(topo, vip)
        assert accepted(on1)
        assert neighbour_mac(topo, vip) == node1.mac
        time.sleep(pause)
        moved = time.monotonic()
        node1.hold(loop, {})
        node2.hold(loop, {vip: ETH0})
        wait_for(
            lambda: neighbour_mac(topo, vip) == node2.mac,
            timeout=1.5,  # the first frame or, if it was lost, the next one 1.1 s later
            what=f"the client's entry for {vip} to name node-2",
            interval=0.002,
        )
        MEASURED[f"move_to_neighbour_update_ipv{vip.version}_after_{pause}s"] = (
            time.monotonic() - moved
        )
        connect_from_client(topo, vip)
        assert accepted(on2) and not accepted(on1)
    assert all(macs == {node2.mac} for macs in observe(topo, vip, 0.3))


def test_answers_only_for_held_vips_and_only_on_their_interface(
    topo: Topology, loop: LoopThread, nodes: list[Node]
) -> None:
    node1 = nodes[0]
    on_lan, on_side, unheld = (ipaddress.ip_address(f"192.0.2.{n}") for n in (204, 214, 224))
    on_side6 = ipaddress.ip_address("2001:db8:5::204")
    node1.hold(loop, {on_lan: ETH0, on_side: SIDE, on_side6: SIDE})
    assert observe(topo, on_lan, 0.3)[-1] == {node1.mac}
    assert observe(topo, on_lan, 0.3, SIDE) == [frozenset()] * 3
    assert observe(topo, on_side, 0.3, SIDE)[-1] == {SIDE_NODE_MAC}
    assert observe(topo, on_side6, 0.3, SIDE)[-1] == {SIDE_NODE_MAC}
    assert not any(observe(topo, on_side, 0.3))
    assert not any(observe(topo, unheld, 0.3))
    requests = node1.recorded.of("request")
    assert (on_lan, SIDE) in requests, "asked on the wrong interface: seen, not answered"
    assert (on_lan, SIDE) not in node1.recorded.of("answer")


def test_a_released_vip_is_not_answered_from_the_next_request_on(
    topo: Topology, loop: LoopThread, nodes: list[Node]
) -> None:
    node1 = nodes[0]
    vip = ipaddress.ip_address("192.0.2.205")
    node1.hold(loop, {vip: ETH0})
    with topo.observe(str(vip), interval=0.05) as observer:
        observer.wait_for(lambda ticks: any(t.macs for t in ticks), timeout=2.0)
        released = time.monotonic()
        node1.hold(loop, {})
        time.sleep(0.5)
    ticks = observer.ticks()
    assert any(t.macs for t in ticks if t.at < released)
    assert not any(t.macs for t in ticks if t.at > released), "answered after its release"


def test_burst_is_five_frames_1_1_s_apart_and_stops_when_released(
    topo: Topology, loop: LoopThread, nodes: list[Node]
) -> None:
    node1 = nodes[0]
    kept, released = ipaddress.ip_address("192.0.2.206"), ipaddress.ip_address("192.0.2.216")
    sniffer = open_raw(topo.observer.netns, ETH0)
    seen: dict[IPAddress, list[float]] = {kept: [], released: []}
    try:
        start = time.monotonic()
        node1.hold(loop, {kept: ETH0, released: ETH0})
        release_at = start + 2.5
        while (now := time.monotonic()) < start + 5.5:
            if release_at and now >= release_at:
                node1.hold(loop, {kept: ETH0})
                release_at = 0.0
            with contextlib.suppress(TimeoutError):
                frame = sniffer.recv(2048)
                claim = frames.parse_claim(frame)
                if claim and claim.mac == node1.mac and frame[:6] == b"\xff" * 6:
                    seen[claim.ip].append(time.monotonic() - start)
    finally:
        sniffer.close()
    gaps = [b - a for a, b in zip(seen[kept], seen[kept][1:], strict=False)]
    MEASURED["first_garp_after_sync"] = seen[kept][0]
    assert len(seen[kept]) == 5, seen
    assert all(abs(gap - 1.1) < 0.1 for gap in gaps), gaps
    assert len(seen[released]) == 3, "at 0, 1.1 and 2.2 s, then cancelled at 2.5 s"


@pytest.mark.parametrize(("vip", "unused"), PROBED)
def test_probe_finds_the_holder_and_nobody_for_an_unused_vip(
    loop: LoopThread, nodes: list[Node], vip: IPAddress, unused: IPAddress
) -> None:
    node1, node2 = nodes
    node1.hold(loop, {vip: ETH0})
    start = time.monotonic()
    found = loop.run(node2.announcer.probe(vip, ETH0))
    MEASURED[f"probe_{vip.version}"] = time.monotonic() - start
    assert found.answered_by == {node1.mac}
    assert not loop.run(node2.announcer.probe(unused))
    assert node1.recorded.of("foreign") == [], "a probe claims nothing"


def test_two_holders_each_report_the_other_mac(loop: LoopThread, nodes: list[Node]) -> None:
    node1, node2 = nodes
    vip = ipaddress.ip_address("192.0.2.207")
    node1.hold(loop, {vip: ETH0})
    node2.hold(loop, {vip: ETH0})
    wait_for(lambda: node1.recorded.of("foreign") and node2.recorded.of("foreign"), 2.0)
    assert node1.recorded.of("foreign")[0] == (vip, node2.mac, ETH0)
    assert node2.recorded.of("foreign")[0] == (vip, node1.mac, ETH0)


def test_interface_view_follows_addresses_and_links(topo: Topology, loop: LoopThread) -> None:
    node1 = topo.nodes[0]
    changes: list[tuple[Interface, ...]] = []
    view = InterfaceView(in_netns=in_netns_of(node1.netns))
    view.subscribe(changes.append)
    loop.run(view.start())
    try:
        eth0 = next(i for i in view.interfaces if i.name == ETH0)
        assert (eth0.link.mac, eth0.up) == (node1.host.mac, True)
        assert node1.host.ip4 in eth0.addresses and node1.host.ip6 in eth0.addresses
        extra = ipaddress.ip_address("198.51.100.70")
        assert view.interface_for(extra) is None
        nsutil.ip("addr", "add", "198.51.100.65/27", "dev", SIDE, netns=node1.netns)
        wait_for(lambda: view.interface_for(extra), 2.0, "the new address in the view")
        started = time.monotonic()
        nsutil.ip("link", "set", SIDE, "down", netns=node1.netns)
        wait_for(lambda: view.interface_for(extra) is None, 2.0, "the link down in the view")
        MEASURED["netlink_link_down_to_view"] = time.monotonic() - started
    finally:
        nsutil.ip("link", "set", SIDE, "up", netns=node1.netns)
        nsutil.ip("addr", "del", "198.51.100.65/27", "dev", SIDE, netns=node1.netns, check=False)
        loop.run(view.stop())
    assert changes, "subscribers heard the changes"


def test_a_new_mac_on_the_interface_is_announced_and_answered(
    topo: Topology, loop: LoopThread, nodes: list[Node]
) -> None:
    node1 = nodes[0]
    vip = ipaddress.ip_address("2001:db8:5::208")
    node1.hold(loop, {vip: SIDE})
    assert observe(topo, vip, 0.3, SIDE)[-1] == {SIDE_NODE_MAC}
    new_mac = "02:00:00:00:05:11"
    nsutil.ip("link", "set", SIDE, "address", new_mac, netns=topo.nodes[0].netns)
    try:
        wait_for(lambda: observe(topo, vip, 0.2, SIDE)[-1] == {new_mac}, 3.0, "the new MAC")
        announced = [args for args in node1.recorded.of("announce") if args == (vip, SIDE)]
        assert len(announced) >= 2, "announced again with the new MAC"
    finally:
        nsutil.ip("link", "set", SIDE, "address", SIDE_NODE_MAC, netns=topo.nodes[0].netns)


def kinds_of(frames: list[bytes]) -> set[tuple[str, int | None]]:
    """(ethertype, ICMPv6 type or None) of each frame."""
    return {(f[12:14].hex(), f[54] if f[12:14] == b"\x86\xdd" else None) for f in frames}


def test_packet_socket_receives_only_arp_and_neighbour_discovery(topo: Topology) -> None:
    observer = topo.observer
    index = nsutil.run_in_netns(observer.netns, lambda: socket.if_nametoindex(ETH0))
    link = Link(ETH0, index, mac_address(observer.host.mac))
    sock = PacketSocket.open(link, in_netns_of(observer.netns))
    try:
        for addr in (observer.host.addr4, observer.host.addr6):
            nsutil.ip("neigh", "del", str(addr), "dev", ETH0, netns=topo.client.netns, check=False)
            nsutil.ip_netns_exec(topo.client.netns, "ping", "-c", "2", "-i", "0.2", str(addr))
        received: list[bytes] = []
        deadline = time.monotonic() + 2.0
        while not {("0806", None), ("86dd", 135)} <= kinds_of(received):  # both requests read
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([sock.fileno()], [], [], left)
            received += sock.receive(limit=1000)
    finally:
        sock.close()
    kinds = kinds_of(received)
    assert ("0806", None) in kinds, "the client's ARP request for the observer"
    assert ("86dd", 135) in kinds, "the client's NS for the observer"
    assert kinds <= {("0806", None), ("86dd", 135), ("86dd", 136)}, "no ICMP echo, nothing else"
    assert all(
        frame[6:12] != bytes.fromhex(observer.host.mac.replace(":", "")) for frame in received
    ), "our own outgoing frames never come back"


def test_ten_thousand_solicited_node_groups_are_joined_and_left(topo: Topology) -> None:
    """More groups than one socket's option memory holds (net.core.optmem_max: ~2,700 at
    128 KiB): the memberships go on more sockets, and every one is left again."""
    observer = topo.observer
    index = nsutil.run_in_netns(observer.netns, lambda: socket.if_nametoindex(ETH0))
    sock = PacketSocket.open(Link(ETH0, index, mac_address(observer.host.mac)),
                             in_netns_of(observer.netns))  # fmt: skip
    vips = [ipaddress.IPv6Address(f"2001:db8:7::1:{i:x}") for i in range(10_000)]

    def groups() -> int:
        table = nsutil.ip_netns_exec(observer.netns, "cat", "/proc/net/igmp6")
        return sum(1 for line in table.splitlines() if line.split()[1] == ETH0
                   and line.split()[2].startswith("ff0200000000000000000001ff"))  # fmt: skip

    before = groups()
    try:
        for vip in vips:
            sock.join(vip)
        assert groups() - before == len(vips)
        for vip in vips:
            sock.leave(vip)
        assert groups() == before
    finally:
        sock.close()


def test_zz_print_measurements() -> None:
    """Not a check: the figures this module measured, for the report (`pytest -s`)."""
    for name, value in sorted(MEASURED.items()):
        print(f"measured {name}={value * 1000:.1f}ms")
