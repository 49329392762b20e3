"""The BGP announcer against a real BIRD 2, without Kubernetes: an announcer per node namespace
drives its ExaBGP; BIRD in the router namespace learns the routes and installs them (ECMP) in the
router's kernel table. Faults: ExaBGP killed and stopped, BIRD restarted, peers added, TCP-MD5."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from lbctl.core.bgproutes import IPNetwork, RouteAttrs, Session
from lbctl.core.model import BGPPeer, Community, CommunityKind, PeerName, Secret
from lbctl.lab import bird, nsutil, plan
from lbctl.lab.procs import wait_for
from lbctl.lab.topology import NodeMember, Topology
from speaker.announcers.bgp import BGPAnnouncer, BGPHooks, RestartReason
from speaker.announcers.bgp.api import SESSION_WARN

NET = ipaddress.ip_network
V1, V2, V3 = (NET(f"{ip}/32") for ip in list(plan.BGP_VIPS4)[1:4])
V6 = NET(f"{plan.BGP_VIPS6[0x10]}/128")  # 2001:db8:3::10
ROUTER = PeerName("router")


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology(nodes=2) as topology:
        yield topology


def session(
    node: NodeMember, *, v6: bool = False, ibgp: bool = False, password: str | None = None
) -> Session:
    my_asn = plan.ROUTER_ASN if ibgp else plan.NODE_ASN
    address = plan.GATEWAY6 if v6 else plan.GATEWAY4
    peer = BGPPeer(PeerName("router6" if v6 else "router"), my_asn, plan.ROUTER_ASN, address,
                   hold_time=9)  # fmt: skip
    local = node.host.addr6 if v6 else node.host.addr4
    return Session(peer, node.host.addr4, local, Secret(password) if password else None)


class Running:
    """An announcer started inside a node's namespace (its thread, so its ExaBGPs, live there)."""

    def __init__(self, topo: Topology, node: NodeMember) -> None:
        self.events: list[tuple[str, object]] = []
        hooks = BGPHooks(
            on_restart=lambda peer, reason: self.events.append(("restart", reason)),
            on_updates=lambda peer, n: self.events.append(("updates", n)),
            on_session=lambda peer, up, why: self.events.append(("session", (up, why))),
        )
        self.announcer = BGPAnnouncer(topo.run_dir / f"bgp-{node.name}", hooks=hooks)
        nsutil.run_in_netns(node.netns, self.announcer.start)

    def pid(self, peer: PeerName = ROUTER) -> int | None:
        return self.announcer.pids().get(peer)

    def up(self, peer: PeerName = ROUTER) -> bool:
        status = self.announcer.statuses().get(peer)
        return status is not None and status.established


@pytest.fixture
def start(topo: Topology) -> Iterator[Callable[[NodeMember], Running]]:
    running: list[Running] = []

    def make(node: NodeMember) -> Running:
        running.append(Running(topo, node))
        return running[-1]

    yield make
    for r in running:
        r.announcer.close()


def routes(*nets: IPNetwork, attrs: RouteAttrs | None = None) -> Mapping[IPNetwork, RouteAttrs]:
    return dict.fromkeys(nets, attrs or RouteAttrs())


def next_hops(topo: Topology, prefix: IPNetwork) -> set[str]:
    out = nsutil.ip("-6" if prefix.version == 6 else "-4", "route", "show", str(prefix),
                    netns=topo.router.netns)  # fmt: skip
    words = out.split()
    return {words[i + 1] for i, w in enumerate(words) if w == "via"}


def hops_become(topo: Topology, prefix: IPNetwork, want: set[str], timeout: float = 10.0) -> float:
    start = time.monotonic()
    what = f"{prefix} via {sorted(want)}"
    wait_for(lambda: next_hops(topo, prefix) == want, timeout, what, interval=0.02)
    return time.monotonic() - start


def addrs(*nodes: NodeMember) -> set[str]:
    return {str(n.host.addr4) for n in nodes}


def test_routes_reach_the_router_over_both_nodes_and_are_withdrawn(
    topo: Topology, start: Callable[[NodeMember], Running]
) -> None:
    n1, n2 = topo.nodes
    topo.start_bird(bird.router_config([n1.host.addr4, n2.host.addr4]))
    a, b = start(n1), start(n2)
    for r, node in ((a, n1), (b, n2)):
        r.announcer.configure({ROUTER: session(node)})
        r.announcer.sync({ROUTER: routes(V1, V2)})
    hops_become(topo, V1, addrs(n1, n2))
    hops_become(topo, V2, addrs(n1, n2))
    wait_for(lambda: a.announcer.statuses()[ROUTER].sent == {V1, V2}, 5.0, "V1, V2 acked")
    a.announcer.sync({ROUTER: routes(V2)})
    hops_become(topo, V1, addrs(n2))
    b.announcer.sync({})
    hops_become(topo, V1, set())
    hops_become(topo, V2, addrs(n1))
    updates = sum(int(n) for kind, n in a.events if kind == "updates")  # type: ignore[call-overload]
    assert updates == 3, a.events  # V1 and V2 announced, V1 withdrawn


def test_communities_and_local_pref_on_an_ibgp_session(
    topo: Topology, start: Callable[[NodeMember], Running]
) -> None:
    n1 = topo.nodes[0]
    topo.start_bird(bird.router_config([n1.host.addr4], peer_asn=plan.ROUTER_ASN))
    r = start(n1)
    attrs = RouteAttrs(150, (Community(CommunityKind.STANDARD, (64500, 7)),
                             Community(CommunityKind.LARGE, (64500, 1, 2))))  # fmt: skip
    r.announcer.configure({ROUTER: session(n1, ibgp=True)})
    r.announcer.sync({ROUTER: routes(V3, attrs=attrs)})
    shown = wait_for(lambda: (out := topo.birdc(f"show route for {V3} all")) and
                     "BGP.local_pref: 150" in out and out, 10.0, "V3 with local-pref")  # fmt: skip
    assert "BGP.community: (64500,7)" in shown
    assert "BGP.large_community: (64500, 1, 2)" in shown
    # A changed attribute is a re-announcement: the path is replaced.
    r.announcer.sync({ROUTER: routes(V3, attrs=RouteAttrs(200))})
    wait_for(lambda: "BGP.local_pref: 200" in topo.birdc(f"show route for {V3} all"), 5.0,
             "local-pref 200")  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_dead_or_hung_exabgp_is_restarted_and_its_routes_come_back(
    topo: Topology, start: Callable[[NodeMember], Running], sig: signal.Signals
) -> None:
    n1 = topo.nodes[0]
    topo.start_bird(bird.router_config([n1.host.addr4]))
    r = start(n1)
    r.announcer.configure({ROUTER: session(n1)})
    r.announcer.sync({ROUTER: routes(V1, V2)})
    hops_become(topo, V1, addrs(n1))
    old = r.pid()
    assert old is not None
    began = time.monotonic()
    os.kill(old, sig)
    try:
        wait_for(lambda: r.pid() not in (None, old), 3.0, "a new ExaBGP", interval=0.02)
        replaced = time.monotonic() - began
        left = 5.0 - (time.monotonic() - began)
        wait_for(lambda: r.up() and r.announcer.statuses()[ROUTER].sent == {V1, V2}, left,
                 "the routes re-sent", interval=0.02)  # fmt: skip
        left = 5.0 - (time.monotonic() - began)
        both = "both routes back in the kernel table"
        wait_for(lambda: next_hops(topo, V1) == next_hops(topo, V2) == addrs(n1), left, both)
        back = time.monotonic() - began
    finally:
        if sig is signal.SIGSTOP:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGCONT)
    want = RestartReason.HUNG if sig is signal.SIGSTOP else RestartReason.EXITED
    assert ("restart", want) in r.events
    print(f"\nExaBGP {sig.name}: new PID after {replaced:.2f} s, routes re-sent after {back:.2f} s")


def test_a_restarted_bird_gets_the_routes_back(
    topo: Topology, start: Callable[[NodeMember], Running]
) -> None:
    n1 = topo.nodes[0]
    config = bird.router_config([n1.host.addr4])
    topo.start_bird(config)
    r = start(n1)
    r.announcer.configure({ROUTER: session(n1)})
    r.announcer.sync({ROUTER: routes(V1)})
    hops_become(topo, V1, addrs(n1))
    topo.stop_bird()
    wait_for(lambda: not r.up(), 10.0, "the session seen down")
    began = time.monotonic()
    topo.start_bird(config)
    took = hops_become(topo, V1, addrs(n1), timeout=5.0)
    print(f"\nBIRD restarted: route back in the kernel table after {time.monotonic() - began:.2f} s"
          f" ({took:.2f} s of waiting)")  # fmt: skip


def since(topo: Topology, protocol: str) -> str:
    for line in topo.birdc("show protocols").splitlines():
        words = line.split()
        if words and words[0] == protocol:
            return " ".join(words[3:5])
    raise AssertionError(f"no BIRD protocol {protocol}")


def test_adding_a_peer_leaves_the_other_session_alone(
    topo: Topology, start: Callable[[NodeMember], Running]
) -> None:
    n1 = topo.nodes[0]
    topo.start_bird(bird.router_config([n1.host.addr4, n1.host.addr6]))
    r = start(n1)
    r.announcer.configure({ROUTER: session(n1)})
    r.announcer.sync({ROUTER: routes(V1)})
    hops_become(topo, V1, addrs(n1))
    wait_for(lambda: "Established" in topo.birdc("show protocols peer1"), 5.0, "peer1 up")
    before, pid = since(topo, "peer1"), r.pid()
    six = session(n1, v6=True)
    r.announcer.configure({ROUTER: session(n1), six.peer.name: six})
    r.announcer.sync({ROUTER: routes(V1), six.peer.name: routes(V6)})
    wait_for(lambda: next_hops(topo, V6) == {str(n1.host.addr6)}, 10.0, "the /128 over IPv6")
    assert f"{V6}" in topo.birdc(f"show route for {V6}")
    assert since(topo, "peer1") == before and r.pid() == pid, "the IPv4 session was disturbed"
    # Removing the IPv6 peer stops its ExaBGP only.
    r.announcer.configure({ROUTER: session(n1)})
    wait_for(lambda: next_hops(topo, V6) == set(), 10.0, "the /128 gone with its session")
    assert since(topo, "peer1") == before


def test_md5_right_password_up_wrong_password_down_and_never_shown(
    topo: Topology, start: Callable[[NodeMember], Running], caplog: pytest.LogCaptureFixture
) -> None:
    n1, n2 = topo.nodes
    wrong = 'se"cr;et\nline'  # quotes, a semicolon and a newline: nothing of it may escape
    topo.start_bird(bird.router_config([n1.host.addr4, n2.host.addr4],
                                       passwords={str(n1.host.addr4): "s3cret-md5",
                                                  str(n2.host.addr4): "s3cret-md5"}))  # fmt: skip
    good, bad = start(n1), start(n2)
    good.announcer.configure({ROUTER: session(n1, password="s3cret-md5")})
    bad.announcer.configure({ROUTER: session(n2, password=wrong)})
    good.announcer.sync({ROUTER: routes(V1)})
    bad.announcer.sync({ROUTER: routes(V1)})
    hops_become(topo, V1, addrs(n1))
    assert good.up()
    # The log line comes after SESSION_WARN seconds without a session; meanwhile it never came up.
    wait_for(lambda: "bgp_session_not_established" in caplog.text, SESSION_WARN + 5.0,
             "the log line about the session")  # fmt: skip
    assert not bad.up(), "a wrong TCP-MD5 password brought the session up"
    assert "password" in bad.announcer.statuses()[ROUTER].error
    assert not any(kind == "session" and value[0] for kind, value in bad.events)  # type: ignore[index]
    assert ("session", (True, "")) in good.events
    assert next_hops(topo, V1) == addrs(n1)
    conf = next((topo.run_dir / f"bgp-{n2.name}").glob("peer-*/exabgp.conf"))
    assert conf.stat().st_mode & 0o777 == 0o600
    assert conf.parent.stat().st_mode & 0o777 == 0o700
    text = conf.read_text()
    assert wrong not in text and 'se"cr' not in text
    assert len([line for line in text.splitlines() if "md5-password" in line]) == 1
    pid = bad.pid()
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    for secret in ("s3cret-md5", wrong):
        assert secret not in argv and secret not in environ
        assert secret not in caplog.text
        assert all(secret not in s.error for s in bad.announcer.statuses().values())
        assert secret not in repr(bad.events)
