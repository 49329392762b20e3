"""The bed's network: LAN bridge, nodes, clients, observer and router namespaces; used by tests
and the lab."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lbctl.lab import bird, nsutil, plan
from lbctl.lab.l2probe import VipObserver
from lbctl.lab.plan import Host, RunId
from lbctl.lab.procs import wait_for
from lbctl.lab.runstate import StateFile, cleanup_run, stop_pids

BRIDGE = "br0"
KILL_WAIT = 5.0  # s for a SIGKILLed child to be reaped

# Every namespace: addresses come up at once (no duplicate address detection stalling NDP tests).
_COMMON_SYSCTLS: dict[str, str | int] = {
    # Link-down tests set eth0 down and up: keep the IPv6 addresses (the kernel's default
    # flushes them), as a real host with static addresses does.
    "net.ipv6.conf.all.keep_addr_on_down": 1,
    "net.ipv6.conf.default.keep_addr_on_down": 1,
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.accept_ra": 0,
    "net.ipv6.conf.default.accept_ra": 0,
}
# Nodes take VIP traffic through a local route but must not answer ARP for it (the speaker
# does), and must not ARP with a VIP as sender after losing it (test-bed.md).
_NODE_SYSCTLS: dict[str, str | int] = {
    **{
        f"net.ipv4.conf.{scope}.{key}": value
        for scope in ("all", "default", "eth0")
        for key, value in (("arp_ignore", 1), ("arp_announce", 2))
    },
    # kube-proxy DNATs a Service's traffic to pods on other nodes: the node forwards it.
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}
# Clients and the router learn new neighbours from gratuitous ARP / unsolicited NA.
_LEARNER_SYSCTLS: dict[str, str | int] = {
    **{f"net.ipv4.conf.{s}.arp_accept": 1 for s in ("all", "default", "eth0")},
    **{f"net.ipv6.conf.{s}.accept_untracked_na": 1 for s in ("all", "default", "eth0")},
    # accept_untracked_na only creates entries on a host that forwards (test-bed.md).
    "net.ipv6.conf.all.forwarding": 1,
}
_ROUTER_SYSCTLS: dict[str, str | int] = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    # Hash on ports too, so ECMP over several BGP next hops spreads connections.
    "net.ipv4.fib_multipath_hash_policy": 1,
    "net.ipv6.fib_multipath_hash_policy": 1,
}


@dataclass(frozen=True)
class Member:
    """A namespace on the bed: its role, its namespace name and its eth0 plan."""

    role: str
    netns: str
    host: Host


@dataclass(frozen=True)
class NodeMember(Member):
    index: int

    @property
    def name(self) -> str:
        return self.role


class Topology:
    """Namespaces and links of one run; a context manager whose exit removes everything."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        runid: str | None = None,
        root: Path = plan.RUN_ROOT,
        keep_run_dir: bool = False,
    ) -> None:
        if not 1 <= nodes <= plan.MAX_NODES:
            raise plan.PlanError(f"{nodes} nodes: want 1..{plan.MAX_NODES}")
        self.runid: RunId = plan.check_runid(runid) if runid else plan.new_runid()
        self.run_dir = plan.run_dir(self.runid, root)
        self.keep_run_dir = keep_run_dir
        name = self.netns_of
        self.lan = name("lan")
        self.nodes = [
            NodeMember(plan.node_name(i), name(plan.node_name(i)), plan.node_host(i), i)
            for i in range(1, nodes + 1)
        ]
        self.router = Member("router", name("router"), plan.ROUTER)
        self.client = Member("client", name("client"), plan.CLIENT)
        self.observer = Member("observer", name("observer"), plan.OBSERVER)
        self.far = Member("far", name("far"), plan.FAR_CLIENT)
        self._state: StateFile | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.bird_pid: int | None = None

    def netns_of(self, role: str) -> str:
        return plan.ns_name(self.runid, role)

    @property
    def lan_members(self) -> list[Member]:
        return [*self.nodes, self.router, self.client, self.observer]

    def node(self, name: str) -> NodeMember:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in run {self.runid}")

    @property
    def state(self) -> StateFile:
        if self._state is None:
            raise RuntimeError(f"topology {self.runid} is not up")
        return self._state

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> Topology:
        """Create every namespace and link; on any failure, remove what was made and re-raise."""
        self.run_dir.mkdir(parents=True, exist_ok=False)
        (self.run_dir / "logs").mkdir()
        self._state = StateFile(self.run_dir, self.runid)
        self._state.save()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process started here and delete every namespace; safe to call twice."""
        if self._state is None:
            return
        stop_pids(self._state.procs())
        for proc in self._procs.values():
            # Reap, so no zombie outlives the run: each got SIGKILL at the latest by now.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_WAIT)
        self._procs.clear()
        cleanup_run(self.run_dir, remove_dir=not self.keep_run_dir)
        self._state = None

    # -- building ------------------------------------------------------------------------------

    def _add_netns(self, netns: str) -> None:
        nsutil.ip("netns", "add", netns)
        self.state.add_namespace(netns)
        nsutil.ip("link", "set", "lo", "up", netns=netns)
        nsutil.sysctls(netns, _COMMON_SYSCTLS)

    def _build(self) -> None:
        self._add_netns(self.lan)
        nsutil.sysctls(
            self.lan,
            {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1},
        )
        # No multicast snooping: NS for a VIP's solicited-node group must reach every port,
        # including speakers that listen on raw sockets without joining the group.
        nsutil.ip_batch(
            self.lan,
            [
                f"link add {BRIDGE} type bridge mcast_snooping 0 stp_state 0",
                f"link set {BRIDGE} up",
            ],
        )
        for member in [*self.lan_members, self.far]:
            self._add_netns(member.netns)
        for member in self.lan_members:
            self._plug_into_lan(member)
        self._plug_far()
        self._route()
        self._tune()

    def _plug_into_lan(self, member: Member) -> None:
        port = plan.port_name(member.role)
        nsutil.ip_batch(
            self.lan,
            [
                f"link add {port} type veth peer name eth0 netns {member.netns}",
                f"link set {port} master {BRIDGE} up",
            ],
        )
        nsutil.ip_batch(member.netns, _address_commands("eth0", member.host))

    def _plug_far(self) -> None:
        nsutil.ip(
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
            self.far.netns, netns=self.router.netns,
        )  # fmt: skip
        nsutil.ip_batch(self.router.netns, _address_commands("eth1", plan.ROUTER_FAR))
        nsutil.ip_batch(self.far.netns, _address_commands("eth0", self.far.host))

    def _lan_routes(self, member: Member) -> list[str]:
        """Routes of a LAN member: default via the router; a node's and the router's to every
        other node's pods (a flat pod network, host-gw style)."""
        routes = []
        if member is not self.router:
            routes += [f"route replace default via {plan.GATEWAY4}",
                       f"route replace ::/0 via {plan.GATEWAY6}"]  # fmt: skip
        if member in self.nodes or member is self.router:
            routes += [
                f"route replace {plan.pod_network(n.index)} via {n.host.addr4}"
                for n in self.nodes
                if n.netns != member.netns and n.index <= plan.MAX_POD_NODES
            ]
        return routes

    def set_link(self, member: Member, up: bool) -> None:
        """Set a member's LAN link down or up; up restores the routes the kernel dropped with
        the link (a link-down test must leave a working node behind)."""
        nsutil.ip("link", "set", "eth0", "up" if up else "down", netns=member.netns)
        if up:
            # The LAN's prefix route comes back with the carrier, a moment after the link.
            def back() -> bool:
                return all(
                    nsutil.ip(*family, "route", "show", str(net), netns=member.netns).strip()
                    for family, net in ((("-4",), plan.LAN4), (("-6",), plan.LAN6))
                )

            wait_for(back, 5.0, f"the LAN routes back in {member.netns}",
                     error=nsutil.NetnsError, interval=0.01)  # fmt: skip
            nsutil.ip_batch(member.netns, self._lan_routes(member))

    def _route(self) -> None:
        for member in self.lan_members:
            nsutil.ip_batch(member.netns, self._lan_routes(member))
        nsutil.ip_batch(
            self.far.netns,
            [
                f"route add default via {plan.FAR_GATEWAY4}",
                f"route add ::/0 via {plan.FAR_GATEWAY6}",
            ],
        )

    def _tune(self) -> None:
        for node in self.nodes:
            nsutil.sysctls(node.netns, _NODE_SYSCTLS)
        for member in (self.client, self.far):
            nsutil.sysctls(member.netns, _LEARNER_SYSCTLS)
        nsutil.sysctls(self.router.netns, {**_LEARNER_SYSCTLS, **_ROUTER_SYSCTLS})

    # -- processes -----------------------------------------------------------------------------

    def spawn(
        self,
        netns: str | None,
        argv: list[str],
        *,
        role: str,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside `netns` (None: the host's), output to logs/<role>.log; recorded
        for down(). `env` is added to this process's environment."""
        log = (self.run_dir / "logs" / f"{role}.log").open("ab")
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv] if netns else argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C at the terminal is for the test runner, not us
                env={**os.environ, **env} if env else None,
            )
        finally:
            log.close()
        self._procs[proc.pid] = proc
        self.state.add_proc(proc.pid, role)
        return proc

    def record_pid(self, pid: int, role: str) -> None:
        """Record a process started elsewhere (the kubelet's backends) so down() stops it."""
        self.state.add_proc(pid, role)

    def forget_pid(self, pid: int) -> None:
        self.state.remove_proc(pid)
        proc = self._procs.pop(pid, None)
        if proc is not None:
            proc.poll()

    def stop_pid(self, pid: int) -> None:
        """Stop one process this topology recorded (SIGTERM, then SIGKILL) and forget it."""
        stop_pids([p for p in self.state.procs() if p.pid == pid])
        self.forget_pid(pid)

    def mac_of(self, netns: str, ifname: str = "eth0") -> str:
        """The MAC address of an interface, as the kernel reports it."""
        return nsutil.mac_address(netns, ifname)

    def observe(self, vip: str, *, interval: float = 0.1) -> VipObserver:
        """An observer (not started) asking for `vip` from the observer namespace."""
        return VipObserver(
            self.observer.netns,
            vip,
            src_mac=self.observer.host.mac,
            src_ip4=self.observer.host.addr4,
            src_ip6=self.observer.host.addr6,
            interval=interval,
        )

    # -- BGP router ----------------------------------------------------------------------------

    def start_bird(self, config_text: str) -> int:
        """Run BIRD 2 in the router namespace with `config_text`; return its PID once it answers."""
        if self.bird_pid is not None:
            raise RuntimeError(f"BIRD already runs in {self.router.netns} (pid {self.bird_pid})")
        self.bird_pid = bird.start(self, config_text)
        return self.bird_pid

    def birdc(self, command: str) -> str:
        """One `birdc` command against this run's BIRD; returns its output."""
        return bird.birdc(self.run_dir, command)

    def stop_bird(self) -> None:
        if self.bird_pid is not None:
            self.stop_pid(self.bird_pid)
            self.bird_pid = None


def _address_commands(ifname: str, host: Host) -> list[str]:
    return [
        f"link set {ifname} address {host.mac}",
        f"addr add {host.ip4} dev {ifname}",
        f"addr add {host.ip6} dev {ifname} nodad",
        f"link set {ifname} up",
    ]
