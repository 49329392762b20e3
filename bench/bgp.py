"""BGP bench: the announcer (speaker/announcers/bgp) against a real BIRD 2, without Kubernetes.

Run as root: `python bench/bgp.py` (full: issue 10's sizes, several runs, percentiles) or
`--smoke` (CI, under a minute: small sizes, fails only when nothing reached BIRD). One node
namespace runs a BGPAnnouncer (its ExaBGP inherits the namespace); BIRD runs in the router
namespace of a `Topology`. Prefixes are /128s of 2001:db8:3:2::/112 (documentation space, inside
BGP_VIPS6) over the IPv6 session, because 10,000 IPv4 /32s do not fit in the documentation ranges.

Sections, each a function taking the `Bench` (the lead adds a Kubernetes-level one the same way):
- `throughput`: sync(N prefixes) -> all N in BIRD (`show route count`), and sync({}) -> none.
- `idle_cpu`: with N announced, CPU of the announcer's process and its ExaBGP and relay over a
  window (the health check every 1 s is the only traffic).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import platform
import re
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lib.report import pct, row

from lbctl.core.bgproutes import IPNetwork, RouteAttrs, Session
from lbctl.core.model import BGPPeer, PeerName
from lbctl.lab import bird, nsutil, plan
from lbctl.lab.topology import Topology
from speaker.announcers.bgp import BGPAnnouncer

MANY = ipaddress.IPv6Network("2001:db8:3:2::/112")
PEER = PeerName("router6")
ALL_IN_TARGET, CPU_TARGET = 10.0, 0.02  # s for 10,000 prefixes; share of one core (issue 10)
TICK = 0.02  # s between polls of birdc: the figures' resolution
QUIET = 0.02  # share of a core under which ExaBGP counts as settled before an idle window


@dataclass(frozen=True)
class Sizes:
    prefixes: int
    runs: int
    cpu_window: float


SMOKE, FULL = Sizes(2000, 1, 5.0), Sizes(10_000, 3, 30.0)


@dataclass
class Bench:
    """One topology with BIRD and an announcer in node 1; what the sections measured."""

    topo: Topology
    announcer: BGPAnnouncer
    sizes: Sizes
    judge: bool
    ok: bool = True
    figures: dict[str, list[float]] = field(default_factory=dict)

    def record(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)


@contextlib.contextmanager
def bench(sizes: Sizes, *, judge: bool) -> Iterator[Bench]:
    with Topology(nodes=1) as topo:
        node = topo.nodes[0]
        topo.start_bird(bird.router_config([node.host.addr6]))
        # Short: ExaBGP's API socket lives under it and a Unix path must fit in 108 bytes.
        run_dir = Path(tempfile.mkdtemp(prefix="bgp-bench-", dir="/tmp"))
        announcer = BGPAnnouncer(run_dir / "announcer")
        nsutil.run_in_netns(node.netns, announcer.start)
        try:
            peer = BGPPeer(PEER, plan.NODE_ASN, plan.ROUTER_ASN, plan.GATEWAY6, hold_time=9)
            announcer.configure({PEER: Session(peer, node.host.addr4, node.host.addr6)})
            until(lambda: established(announcer), 15.0, "the IPv6 session up")
            yield Bench(topo, announcer, sizes, judge)
        finally:
            announcer.close(timeout=10.0)
            with contextlib.suppress(OSError):
                for path in sorted(run_dir.rglob("*"), reverse=True):
                    path.unlink() if not path.is_dir() else path.rmdir()
                run_dir.rmdir()


def established(announcer: BGPAnnouncer) -> bool:
    status = announcer.statuses().get(PEER)
    return status is not None and status.established


def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` every TICK until true; the seconds it took. Raises after `timeout`."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(TICK)
    return time.monotonic() - began


def bird_routes(topo: Topology) -> int:
    """Routes in BIRD's tables (`N of M routes for K networks in table T`, summed)."""
    out = topo.birdc("show route count")
    return sum(int(n) for n in re.findall(r"(\d+) of \d+ routes", out))


def prefixes(n: int) -> dict[IPNetwork, RouteAttrs]:
    nets = MANY.subnets(new_prefix=128)
    return {next(nets): RouteAttrs() for _ in range(n)}


# -- sections -------------------------------------------------------------------------------------


def throughput(b: Bench) -> None:
    """sync(N) -> all N in BIRD; sync({}) -> none. Once per run."""
    n = b.sizes.prefixes
    want = prefixes(n)
    b.announcer.sync({PEER: {}})  # a previous run's idle_cpu left them announced
    until(lambda: bird_routes(b.topo) == 0, max(60.0, n / 100), "none in BIRD")
    pids = processes(b.announcer)
    cpu_before = own_cpu() + sum(cpu_s(pid) for pid in pids)
    began = time.monotonic()
    b.announcer.sync({PEER: want})
    bound = max(60.0, n / 100)
    b.record("all_in_bird", until(lambda: bird_routes(b.topo) >= n, bound, f"{n} in BIRD"))
    acked = lambda: len(b.announcer.statuses()[PEER].sent) == n  # noqa: E731
    until(acked, bound, f"{n} acknowledged")
    b.record("all_acked", time.monotonic() - began)
    # CPU seconds the announce cost (announcer, ExaBGP, relay; not BIRD): what the wall time
    # comes down to on an idle machine, whatever the load while measuring.
    b.record("cpu_announce", own_cpu() + sum(cpu_s(pid) for pid in pids) - cpu_before)
    began = time.monotonic()
    b.announcer.sync({PEER: {}})
    b.record("all_withdrawn", until(lambda: bird_routes(b.topo) == 0, bound, "none in BIRD"))


def idle_cpu(b: Bench) -> None:
    """N announced, nothing changing: CPU share of one core over the window."""
    n = b.sizes.prefixes
    b.announcer.sync({PEER: prefixes(n)})
    until(lambda: bird_routes(b.topo) >= n, max(60.0, n / 100), f"{n} in BIRD")
    pids = processes(b.announcer)
    quiet(pids)  # the announce's tail (ExaBGP's RIB work, BIRD's kernel export) is not idle
    before_self, before = own_cpu(), {pid: cpu_s(pid) for pid in pids}
    began = time.monotonic()
    time.sleep(b.sizes.cpu_window)  # the measured idle window itself
    wall = time.monotonic() - began
    used = {pid: cpu_s(pid) - before[pid] for pid in pids}
    b.record("cpu_announcer", (own_cpu() - before_self) / wall)
    b.record("cpu_exabgp", sum(used.values()) / wall)
    b.record("cpu_total", (own_cpu() - before_self + sum(used.values())) / wall)


SECTIONS: dict[str, Callable[[Bench], None]] = {"throughput": throughput, "idle_cpu": idle_cpu}


# -- /proc ----------------------------------------------------------------------------------------


def processes(announcer: BGPAnnouncer) -> list[int]:
    """Each ExaBGP and its children (the relay)."""
    out = []
    for pid in announcer.pids().values():
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiet(pids: list[int], timeout: float = 30.0) -> float:
    """Wait until ExaBGP and its relay used under QUIET of a core over one second (polled once
    a second, up to `timeout`); the seconds it took."""
    began = time.monotonic()
    last = sum(cpu_s(pid) for pid in pids)
    while time.monotonic() - began < timeout:
        time.sleep(1.0)  # the sampling period of the quiet check
        now = sum(cpu_s(pid) for pid in pids)
        if now - last < QUIET:
            break
        last = now
    return time.monotonic() - began


def own_cpu() -> float:
    """This process's CPU: the announcer's threads (the bench's own thread sleeps meanwhile)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- report ---------------------------------------------------------------------------------------


def spread(values: list[float], unit: float, suffix: str) -> str:
    if len(values) == 1:
        return f"{values[0] * unit:.2f}{suffix}"
    return (f"p50 {pct(values, 50) * unit:.2f}{suffix}, max {max(values) * unit:.2f}{suffix}, "
            f"mean {statistics.mean(values) * unit:.2f}{suffix} (n={len(values)})")  # fmt: skip


def report(b: Bench) -> bool:
    n, f, judge = b.sizes.prefixes, b.figures, b.judge
    ok = True
    if "all_in_bird" in f:
        scaled = max(f["all_in_bird"]) * 10_000 / n  # the target is for 10,000
        target = f"<= {ALL_IN_TARGET:.0f} s for 10,000"
        verdict = scaled <= ALL_IN_TARGET if judge else None
        ok &= row(f"{n} prefixes: sync -> all in BIRD", spread(f["all_in_bird"], 1, " s"),
                  target, verdict)  # fmt: skip
        row(f"{n} prefixes: sync -> all acknowledged", spread(f["all_acked"], 1, " s"))
        cpu = spread(f["cpu_announce"], 1, " s")
        row(f"{n} prefixes: CPU of the announce (ours + ExaBGP)", cpu)
        row(f"{n} prefixes: sync({{}}) -> none in BIRD", spread(f["all_withdrawn"], 1, " s"))
    if "cpu_total" in f:
        idle = f"idle, {n} announced"
        row(f"{idle}: announcer threads", spread(f["cpu_announcer"], 100, " %"))
        row(f"{idle}: ExaBGP + relay", spread(f["cpu_exabgp"], 100, " %"))
        verdict = max(f["cpu_total"]) <= CPU_TARGET if judge else None
        ok &= row(f"{idle}: total ({b.sizes.cpu_window:.0f} s windows)",
                  spread(f["cpu_total"], 100, " %"), f"<= {CPU_TARGET:.0%} of a core",
                  verdict)  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI: small sizes, under a minute")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--prefixes", type=int, help="prefixes announced")
    parser.add_argument("--runs", type=int, help="runs of each section (one topology)")
    parser.add_argument("--cpu-window", type=float, help="seconds of each idle CPU window")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else FULL
    sizes = Sizes(args.prefixes or base.prefixes, args.runs or base.runs,
                  args.cpu_window or base.cpu_window)  # fmt: skip
    one, five, _ = os.getloadavg()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"bench/bgp.py {when} {platform.node()} {os.cpu_count()} cores, "
          f"load {one:.2f}/{five:.2f}; {sizes}")  # fmt: skip
    with bench(sizes, judge=not args.smoke) as b:
        for _ in range(sizes.runs):
            for name in args.only:
                SECTIONS[name](b)
        ok = report(b)
    one, five, _ = os.getloadavg()
    print(f"load after: {one:.2f}/{five:.2f}")
    if args.smoke:  # CI: only "nothing worked" fails; the figures are judged in full runs
        return 0 if b.figures else 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
