"""Allocator bench: allocations/s and per-op time at /24, /16, /8, /64; re-examination on release.

Run `python bench/allocator.py` (full: 7 runs, exits 1 if a target is missed) or `--smoke` (CI:
3 runs, fails only on the re-examination rule or a ratio above 3, since CI machines are noisy).
Figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lbctl.core.allocator import Allocator, Assignment
from lbctl.core.model import (
    AddressRange,
    Config,
    Family,
    Pool,
    PoolName,
    ServiceKey,
    ServiceRequest,
)

# (label, pool, fragmented window). Every other address of the window is taken, Service by
# Service (a pool is never enumerated). Pairs with the same window compare pool sizes under the
# same workload: /8 and /64 against the /24 at 256 addresses (128 Services), and against the /16
# at 65,536 (32,768 Services).
SMALL, LARGE = 256, 65_536
CASES = (
    ("/24", "198.51.100.0/24", SMALL),
    ("/8", "10.0.0.0/8", SMALL),
    ("/64", "2001:db8::/64", SMALL),
    ("/16", "10.0.0.0/16", LARGE),
    ("/8", "10.0.0.0/8", LARGE),
    ("/64", "2001:db8::/64", LARGE),
)
RATIOS = (("/8", "/24", SMALL), ("/64", "/24", SMALL), ("/8", "/16", LARGE), ("/64", "/16", LARGE))
OPS = 10_000  # mixed operations per run: OPS / 2 releases, OPS / 2 allocations
WAITING_ELSEWHERE = 10_000
WAITING_HERE = 5
TARGET_RATIO, SMALL_LIMIT, TARGET_RATE = 1.5, 3.0, 50_000  # SMALL_LIMIT: --smoke ratio bound


@dataclass(frozen=True)
class Run:
    per_op_us: float
    allocs_per_s: float
    intervals: int


def pool_config(name: str, cidr: str, *, auto: bool = True) -> Pool:
    net = ipaddress.ip_network(cidr)
    return Pool(PoolName(name), (AddressRange(net[0], net[-1], cidr),), auto_assign=auto)


def fragmented(cidr: str, window: int) -> tuple[Allocator, list[ServiceKey], Family]:
    net = ipaddress.ip_network(cidr)
    fam = Family(net.version)
    alloc = Allocator(Config(pools=(pool_config("bench", cidr),)))
    reqs = [ServiceRequest(ServiceKey(f"bench/f{i}"), families=(fam,)) for i in range(window)]
    for req in reqs:
        alloc.allocate(req)
    for req in reqs[0::2]:
        alloc.release(req.key)
    return alloc, [r.key for r in reqs[1::2]], fam


def mixed_run(cidr: str, window: int, seed: int) -> Run:
    alloc, held, fam = fragmented(cidr, window)
    rnd = random.Random(seed)
    plan: list[tuple[ServiceKey, ServiceRequest]] = []
    for i in range(OPS // 2):  # decided before timing: release a random holder, add a Service
        k = rnd.randrange(len(held))
        req = ServiceRequest(ServiceKey(f"bench/n{i}"), families=(fam,))
        plan.append((held[k], req))
        held[k] = req.key
    clock = time.perf_counter_ns
    t_alloc = t_release = 0
    for victim, req in plan:
        t0 = clock()
        alloc.release(victim)
        t1 = clock()
        alloc.allocate(req)
        t2 = clock()
        t_release += t1 - t0
        t_alloc += t2 - t1
    if alloc.pending() or not isinstance(alloc.assignment(plan[-1][1].key), Assignment):
        raise SystemExit(f"bench bug: an allocation failed in {cidr}")
    intervals = alloc._table.by_name[PoolName("bench")].spaces[fam].intervals
    return Run((t_alloc + t_release) / OPS / 1000, len(plan) / (t_alloc / 1e9), intervals)


def reexamination() -> tuple[list[int], int, float]:
    """Per release: re-examined counts, total assigned, median µs; 10,000 wait on another pool."""
    cfg = Config(
        pools=(
            pool_config("hot", "198.51.100.0/28"),
            pool_config("cold", "203.0.113.0/30", auto=False),
        )
    )
    alloc = Allocator(cfg)
    for i in range(16):
        alloc.allocate(ServiceRequest(ServiceKey(f"hot/h{i}"), created=f"0-{i:05d}"))
    for i in range(4 + WAITING_ELSEWHERE):
        alloc.allocate(
            ServiceRequest(ServiceKey(f"cold/c{i}"), pool=PoolName("cold"), created=f"1-{i:05d}")
        )
    for i in range(WAITING_HERE):
        alloc.allocate(ServiceRequest(ServiceKey(f"wait/w{i}"), created=f"2-{i:05d}"))
    assert len(alloc.pending()) == WAITING_ELSEWHERE + WAITING_HERE
    counts: list[int] = []
    times: list[float] = []
    woken = 0
    for i in range(WAITING_HERE):  # each release frees one IP that the 5 waiting could use
        before = alloc.stats.reexamined
        t0 = time.perf_counter_ns()
        woken += len(alloc.release(ServiceKey(f"hot/h{i}")))
        times.append((time.perf_counter_ns() - t0) / 1000)
        counts.append(alloc.stats.reexamined - before)
    return counts, woken, statistics.median(times)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu
        )
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}"


def measure(runs: int) -> dict[tuple[str, int], float]:
    """Print one table row per case; returns median µs/op by (label, window)."""
    print(
        f"{'pool':<5} {'cidr':<16} {'window':>7} {'Services':>8} {'intervals':>9} "
        f"{'alloc/s':>9} {'us/op':>6}"
    )
    per_op: dict[tuple[str, int], float] = {}
    for label, cidr, window in CASES:
        results = [mixed_run(cidr, window, seed) for seed in range(runs)]
        per_op[label, window] = statistics.median(r.per_op_us for r in results)
        rate = statistics.median(r.allocs_per_s for r in results)
        RATES.append(rate)
        print(
            f"{label:<5} {cidr:<16} {window:>7,} {window // 2:>8,} {results[-1].intervals:>9,} "
            f"{rate:>9,.0f} {per_op[label, window]:>6.2f}"
        )
    return per_op


RATES: list[float] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI: fewer runs, lenient targets")
    parser.add_argument("--runs", type=int, default=None, help="runs per case (median taken)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.smoke else 7)
    print(
        f"allocator bench ({'smoke' if args.smoke else 'full'}): {runs} runs per case, "
        f"{OPS:,} mixed allocate/release ops per run, medians"
    )
    print(f"machine: {machine()}")
    per_op = measure(runs)
    limit = SMALL_LIMIT if args.smoke else TARGET_RATIO
    failures: list[str] = []
    for big, small, window in RATIOS:
        ratio = per_op[big, window] / per_op[small, window]
        print(
            f"ratio {big} / {small} per-op time, {window:,}-address window: {ratio:.2f} "
            f"(target <= {TARGET_RATIO})"
        )
        if ratio > limit:
            failures.append(f"ratio {big} / {small} ({window:,}) = {ratio:.2f} > {limit}")
    counts, woken, took = reexamination()
    print(
        f"release with {WAITING_ELSEWHERE:,} waiting on another pool and {WAITING_HERE} that "
        f"could use the IP: re-examined per release {counts}, assigned {woken}, "
        f"median release {took:.1f} us"
    )
    if counts != [1] * WAITING_HERE or woken != WAITING_HERE:
        failures.append(f"re-examined {counts}: only a request that could use the IP may be")
    if not args.smoke and min(RATES) < TARGET_RATE:
        failures.append(f"{min(RATES):,.0f} allocations/s < {TARGET_RATE:,}")
    for f in failures:
        print(f"TARGET MISSED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
