"""Controller convergence bench: create -> IP p50/p99, a burst to all IPs, RSS at N Services.

Run `python bench/convergence.py` (full: issue sizes, 3 runs, medians; exits 1 if a target is
missed) or `--smoke` (CI: small sizes, one run; fails only on gross failures, since CI machines
are noisy). The bed API server and the controller each run as a separate process (the controller
as `lbctl-controller`, so its RSS is its own); this process only creates Services and watches
them. Figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbctl.lab import procs

BIN = Path(sys.executable).parent
CONFIG_NS, CONFIG_NAME = "lbctl-system", "lbctl-config"
# IPv6 single-stack Services without node ports: the bed's IPv4 cluster-IP range is a /24 (254
# Services) and node ports are 2,768; an IPv6 pool in 2001:db8::/32 (RFC 3849) holds 65,536.
POOL = "2001:db8:b::/112"
CONFIG_HEAD = "apiVersion: lbctl.io/v1alpha1\nkind: Config\n"
MB = 1e6 / 2**20  # MiB: the targets are in MB (10^6 bytes), /proc reports KiB
P99_TARGET, BURST_TARGET, GROWTH_TARGET, TOTAL_TARGET = 0.100, 5.0, 50 * MB, 200 * MB  # s, s, MiB
SMOKE_TOTAL_LIMIT = 400.0  # MiB: --smoke fails only above this (or on a Service with no IP)
QUIET = 0.5  # s without a Service event after the warm-up (see warm_up)
START_TIMEOUT, IP_TIMEOUT = 60.0, 10.0  # s: a process to be ready; one Service to get its IP
STRATEGIC, MERGE = "application/strategic-merge-patch+json", "application/merge-patch+json"
Body = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    singles: int
    burst: int
    rss: int
    runs: int
    threads: int = 4  # client threads posting a burst (this process; the bed has its own CPU)


FULL, SMOKE = Sizes(200, 1_000, 10_000, 3), Sizes(50, 200, 1_000, 1)


# ---- processes ---------------------------------------------------------------------------


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll pred until truthy (bounded in time); a short period keeps the latency honest."""
    return procs.wait_for(pred, timeout, what, error=TimeoutError, interval=0.01)


def kubeconfig(path: Path, url: str, identity: str) -> Path:
    """A kubeconfig whose bearer token is `identity` (the bed logs requests by identity)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bed", "cluster": {"server": url}}],
        "users": [{"name": identity, "user": {"token": identity}}],
        "contexts": [{"name": "bed", "context": {"cluster": "bed", "user": identity}}],
        "current-context": "bed",
    }
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    return path


def alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def bed(tmp: Path) -> Iterator[tuple[str, int]]:
    """The bed API server as its own process (`python -m lbctl.lab.apiserver`): URL and PID."""
    log = tmp / "apiserver.log"
    with procs.logged([sys.executable, "-m", "lbctl.lab.apiserver", "--port", "0"], log) as proc:

        def url() -> str | None:
            alive(proc, log)
            for line in log.read_text().splitlines():
                if line.startswith("apiserver listening url="):
                    return line.split("=", 1)[1].strip()
            return None

        yield wait_until(url, START_TIMEOUT, "the bed API server"), proc.pid


def controller_cmd(kc: Path) -> list[str]:
    """As shipped: leader election on (one replica holds the Lease in lbctl-system)."""
    cmd = [str(BIN / "lbctl-controller"), f"--kubeconfig={kc}", "--log-level=WARNING"]
    return [
        *cmd,
        f"--config-map={CONFIG_NS}/{CONFIG_NAME}",
        "--metrics-bind-address=127.0.0.1:{port}",
    ]


@contextlib.contextmanager
def controller(tmp: Path, url: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`lbctl-controller` as its own process, ready (/readyz) and settled (a first IP given)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [c.format(port=port) for c in controller_cmd(kubeconfig(tmp / "kc", url, "ctl"))]
    log = tmp / "controller.log"
    with procs.logged(cmd, log) as proc:

        def ready() -> bool:
            alive(proc, log)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            except OSError:
                return False
            finally:
                conn.close()

        wait_until(ready, START_TIMEOUT, "the controller's /readyz")
        yield proc, port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float) -> None:
    """Until the process used < 5 % of a CPU over the last QUIET s (its backlog is worked off)."""
    samples: list[tuple[float, float]] = []

    def calm() -> bool:
        now = time.monotonic()
        samples.append((now, cpu_s(pid)))
        old = [x for x in samples if now - x[0] >= QUIET]
        return bool(old) and samples[-1][1] - old[-1][1] < 0.05 * (now - old[-1][0])

    wait_until(calm, timeout, f"PID {pid} to go idle")


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for PID {pid}")


# ---- the bench's own client: raw HTTP, no deserialising into models ------------------------


class Client:
    """One keep-alive connection to the bed (one per thread)."""

    def __init__(self, url: str, token: str = "bench") -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, method: str, path: str, body: bytes | None = None, ctype: str = "") -> Body:
        headers = {**self.headers, "Content-Type": ctype} if ctype else self.headers
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} {data[:300]!r}")
        result: Body = json.loads(data)
        return result

    def close(self) -> None:
        self.conn.close()


def service_body(name: str) -> bytes:
    spec = {
        "type": "LoadBalancer",
        "ipFamilies": ["IPv6"],
        "ipFamilyPolicy": "SingleStack",
        "allocateLoadBalancerNodePorts": False,
        "ports": [{"name": "http", "port": 80}],
        "selector": {"app": name},
    }
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
    return json.dumps(body).encode()


def prepare(url: str, namespaces: list[str]) -> None:
    """The pool ConfigMap and the namespaces the measurements create Services in."""
    c = Client(url)
    try:
        for ns in [CONFIG_NS, *namespaces]:
            c.call("POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": ns}}).encode())
        text = f'{CONFIG_HEAD}pools:\n- name: bench\n  addresses: ["{POOL}"]\n'
        cm = {"metadata": {"name": CONFIG_NAME}, "data": {"config.yaml": text}}
        c.call("POST", f"/api/v1/namespaces/{CONFIG_NS}/configmaps", json.dumps(cm).encode())
    finally:
        c.close()


@dataclass
class Watch:
    """All Services on one watch stream: when each first showed an IP; which carry our annotation.

    Counts per namespace make a wait for 10,000 Services O(1) per event.
    """

    url: str
    ip_at: dict[str, float] = field(default_factory=dict)  # "ns/name" -> perf_counter()
    annotated: set[str] = field(default_factory=set)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (ns, "ip"|"ann") -> n
    ended: bool = False
    last_event: float = 0.0  # perf_counter() of the latest event
    guard: Callable[[], None] = lambda: None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        self.client = Client(self.url)
        rv = self.client.call("GET", "/api/v1/services?limit=1")["metadata"]["resourceVersion"]
        query = f"watch=true&resourceVersion={rv}&timeoutSeconds=3600"
        self.client.conn.request("GET", f"/api/v1/services?{query}", headers=self.client.headers)
        resp = self.client.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"watch: HTTP {resp.status}")
        self.thread = threading.Thread(target=self._read, args=(resp,), daemon=True)
        self.thread.start()

    def _read(self, resp: http.client.HTTPResponse) -> None:
        try:
            for line in resp:
                self._seen(time.perf_counter(), json.loads(line)["object"])
        except Exception:  # the stream's end (stop() or the bed) ends the waits
            pass
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def _seen(self, now: float, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace"))
        key = f"{ns}/{meta.get('name')}"
        has_ip = bool(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
        has_ann = "lbctl.io/ip-allocated-from-pool" in (meta.get("annotations") or {})
        with self.cond:
            self.last_event = now
            if has_ip and key not in self.ip_at:
                self.ip_at[key] = now
                self.counts[ns, "ip"] = self.counts.get((ns, "ip"), 0) + 1
                self.cond.notify_all()
            if has_ann and key not in self.annotated:
                self.annotated.add(key)
                self.counts[ns, "ann"] = self.counts.get((ns, "ann"), 0) + 1
                self.cond.notify_all()

    def has_ip(self, key: str) -> Callable[[], bool]:
        return lambda: key in self.ip_at

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """Until pred() holds; fails at once if the watch ends or `self.guard` raises (a process
        the wait depends on exited), else after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                if self.ended:
                    raise RuntimeError(f"the watch ended while waiting for {what}")
                self.guard()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def wait_count(self, ns: str, kind: str, n: int, timeout: float) -> None:
        what = {"ip": "IPs", "ann": "annotations"}[kind]
        pred = lambda: self.counts.get((ns, kind), 0) >= n  # noqa: E731
        self.wait(pred, timeout, f"{what} on {n:,} Services in {ns}")

    def stop(self) -> None:
        sock = self.client.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # ends the reader's blocking read
        self.thread.join(timeout=5)
        self.client.close()


# ---- measurements ------------------------------------------------------------------------

Request = tuple[str, str, bytes, str]  # method, path, body, content type


def post_all(url: str, requests: list[Request], threads: int) -> float:
    """Send requests from `threads` connections as fast as the bed answers; seconds taken."""
    shares = [requests[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(share: list[Request]) -> None:
        c = Client(url)
        try:
            barrier.wait(timeout=30)
            for method, path, body, ctype in share:
                c.call(method, path, body, ctype)
        except Exception as err:  # reported by the caller, which owns the exit status
            errors.append(err)
        finally:
            c.close()

    workers = [threading.Thread(target=work, args=(s,), daemon=True) for s in shares]
    for w in workers:
        w.start()
    barrier.wait(timeout=30)
    t0 = time.perf_counter()
    for w in workers:
        w.join(timeout=900)
    took = time.perf_counter() - t0
    if errors or any(w.is_alive() for w in workers):
        raise RuntimeError(f"posting {len(requests)} requests: {errors[:1] or 'stuck'}")
    return took


def creates(ns: str, names: list[str]) -> list[Request]:
    path = f"/api/v1/namespaces/{ns}/services"
    return [("POST", path, service_body(n), "") for n in names]


def singles(url: str, watch: Watch, ns: str, n: int) -> list[tuple[float, float, float]]:
    """(create sent -> IP seen, create returned -> IP seen, create request), one at a time."""
    c = Client(url)
    found: list[tuple[float, float, float]] = []
    try:
        for i in range(n):
            key = f"{ns}/s{i:05d}"
            t0 = time.perf_counter()
            c.call("POST", f"/api/v1/namespaces/{ns}/services", service_body(f"s{i:05d}"))
            t1 = time.perf_counter()
            watch.wait(watch.has_ip(key), IP_TIMEOUT, f"an IP on {key}")
            found.append((watch.ip_at[key] - t0, watch.ip_at[key] - t1, t1 - t0))
    finally:
        c.close()
    return found


@dataclass(frozen=True)
class Burst:
    all_ips: float  # s from the first create sent to the last Service showing an IP
    creates: float  # s the creates alone took
    controller_cpu: float  # CPU s each process used meanwhile: who is the bottleneck
    bed_cpu: float


def burst(s: Session, ns: str, n: int, threads: int) -> Burst:
    """n Services posted at once, from `threads` connections; wait until all show an IP."""
    names = [f"b{i:05d}" for i in range(n)]
    cpu0 = cpu_s(s.controller), cpu_s(s.bed)
    t0 = time.perf_counter()
    took = post_all(s.url, creates(ns, names), threads)
    s.watch.wait_count(ns, "ip", n, max(60.0, n * 0.1))
    all_ips = max(s.watch.ip_at[f"{ns}/{name}"] for name in names) - t0
    return Burst(all_ips, took, cpu_s(s.controller) - cpu0[0], cpu_s(s.bed) - cpu0[1])


def warm_up(url: str, watch: Watch) -> None:
    """One Service through the whole path: kopf's watches are up, first-call costs are paid."""
    c = Client(url)
    try:
        c.call("POST", "/api/v1/namespaces/warm/services", service_body("warm"))
    finally:
        c.close()
    watch.wait_count("warm", "ip", 1, START_TIMEOUT)
    watch.wait_count("warm", "ann", 1, IP_TIMEOUT)
    # Measure the steady state: the warm-up's own writes and the Lease take-over have settled.
    # (Before the fix of "activation under churn" in docs/performance.md this wait was needed.)
    quiet = lambda: time.perf_counter() - watch.last_event >= QUIET  # noqa: E731
    wait_until(quiet, IP_TIMEOUT, f"{QUIET} s without a Service event")


@dataclass(frozen=True)
class Session:
    url: str
    watch: Watch
    bed: int  # PIDs
    controller: int = 0
    metrics_port: int = 0

    def metric(self, prefix: str) -> float:
        """Sum of the controller's /metrics samples whose line starts with prefix."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(prefix))


@contextlib.contextmanager
def session(with_controller: bool = True) -> Iterator[Session]:
    """A fresh bed, its namespaces and pool, the bench's watch and (optionally) a controller."""
    with tempfile.TemporaryDirectory(prefix="lbctl-bench-") as tmp, bed(Path(tmp)) as (url, pid):
        prepare(url, ["warm", "single", "burst", "fleet"])
        watch = Watch(url)
        watch.start()
        try:
            if not with_controller:
                yield Session(url, watch, pid)
                return
            with controller(Path(tmp), url) as (proc, port):
                watch.guard = lambda: alive(proc, Path(tmp) / "controller.log")
                warm_up(url, watch)
                yield Session(url, watch, pid, proc.pid, port)
        finally:
            watch.stop()


@dataclass
class RunFigures:
    single: list[tuple[float, float, float]]
    burst: Burst


def convergence_run(sizes: Sizes) -> RunFigures:
    with session() as s:
        single = singles(s.url, s.watch, "single", sizes.singles)
        s.watch.wait_count("single", "ann", sizes.singles, IP_TIMEOUT)  # quiet before the burst
        return RunFigures(single, burst(s, "burst", sizes.burst, sizes.threads))


@dataclass(frozen=True)
class RssFigures:
    before: float  # MiB: ready, one (warm-up) Service
    after: float  # MiB: every Service has its IP and the controller's last write is done
    peak: float  # VmHWM
    burst: Burst
    activations: float  # restores during the run beyond the first: leadership lost and regained
    fenced: float  # writes skipped because the replica was past its renew deadline


def rss_run(sizes: Sizes) -> RssFigures:
    with session() as s:
        before = rss_mib(s.controller)
        figures = burst(s, "fleet", sizes.rss, sizes.threads)
        # RSS after the controller's last write per Service (the annotation, after the status)
        # and after it has worked off the watch events its own writes caused.
        s.watch.wait_count("fleet", "ann", sizes.rss, max(60.0, sizes.rss * 0.1))
        wait_idle(s.controller, max(60.0, sizes.rss * 0.01))
        after, peak = rss_mib(s.controller), rss_mib(s.controller, "VmHWM")
        again = s.metric("lbctl_activations ") - 1
        fenced = s.metric('lbctl_api_writes_total{kind="fenced"')
        return RssFigures(before, after, peak, figures, again, fenced)


def rss_paced(sizes: Sizes) -> tuple[float, float]:
    """RSS before and after the same number of Services created one at a time (no backlog)."""
    with session() as s:
        before = rss_mib(s.controller)
        singles(s.url, s.watch, "fleet", sizes.rss)
        s.watch.wait_count("fleet", "ann", sizes.rss, IP_TIMEOUT)
        wait_idle(s.controller, START_TIMEOUT)
        return before, rss_mib(s.controller)


def bed_alone(sizes: Sizes) -> dict[str, float]:
    """Requests/s the bed answers with no controller, for each kind of request a Service costs."""
    n, ns = sizes.burst, "burst"
    names = [f"b{i:05d}" for i in range(n)]
    base = f"/api/v1/namespaces/{ns}"
    cond = {"type": "lbctl.io/IPAllocated", "status": "True", "reason": "Allocated", "message": ""}
    cond["lastTransitionTime"] = "2026-01-01T00:00:00Z"
    ingress = [{"ip": "2001:db8:b::1", "ipMode": "VIP"}]
    status = {"status": {"loadBalancer": {"ingress": ingress}, "conditions": [cond]}}
    ann = {"metadata": {"annotations": {"lbctl.io/ip-allocated-from-pool": "bench"}}}
    event = {"involvedObject": {"kind": "Service", "namespace": ns}, "reason": "IPAllocated"}
    kinds: dict[str, list[Request]] = {
        "create": creates(ns, names),
        "status patch": [
            ("PATCH", f"{base}/services/{m}/status", json.dumps(status).encode(), STRATEGIC)
            for m in names
        ],
        "metadata patch": [
            ("PATCH", f"{base}/services/{m}", json.dumps(ann).encode(), MERGE) for m in names
        ],
        "Event": [
            ("POST", f"{base}/events", json.dumps({**event, "metadata": {"name": m}}).encode(), "")
            for m in names
        ],
    }
    with session(with_controller=False) as s:
        return {kind: n / post_all(s.url, reqs, sizes.threads) for kind, reqs in kinds.items()}


# ---- report ------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}"


def pct(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method: p99 of 200 samples lies between the top two)."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def row(what: str, value: str, target: str = "", ok: bool | None = None) -> bool:
    verdict = "" if ok is None else ("PASS" if ok else "MISS")
    print(f"| {what:<52} | {value:>15} | {target:>21} | {verdict:<4} |")
    return ok is not False


def burst_rows(b: Burst, n: int, label: str, target: bool) -> bool:
    ok = row(
        f"{label}: all {n:,} have IPs",
        f"{b.all_ips:.2f} s",
        *(("<= 5 s", b.all_ips <= BURST_TARGET) if target else ()),
    )
    row(f"  the creates alone ({n / b.creates:,.0f}/s)", f"{b.creates:.2f} s")
    cpu = f"{b.controller_cpu:.1f} / {b.bed_cpu:.1f} s"
    row("  CPU used meanwhile: controller / bed", cpu)
    return ok


def report_runs(runs: list[RunFigures], sizes: Sizes) -> bool:
    """One line per run, then the table rows with medians; False if a target is missed."""
    stats: list[list[float]] = [[], [], [], [], []]  # p50, p99 from send; p50, p99 from return
    for i, r in enumerate(runs, 1):
        sent, returned, req = ([x[k] * 1000 for x in r.single] for k in range(3))
        got = (pct(sent, 50), pct(sent, 99), pct(returned, 50), pct(returned, 99), pct(req, 50))
        for into, value in zip(stats, got, strict=True):
            into.append(value)
        print(
            f"run {i}: create->IP p50 {got[0]:.1f} ms, p99 {got[1]:.1f} ms, max "
            f"{max(sent):.1f} ms; burst of {sizes.burst:,}: all IPs {r.burst.all_ips:.2f} s"
        )
    print(f"| {'measurement':<52} | {'value':>15} | {'target':>21} | {'':<4} |")
    print(f"|{'-' * 54}|{'-' * 16}:|{'-' * 22}:|{'-' * 6}|")
    med = [statistics.median(v) for v in stats]
    row(f"create->IP p50 ({sizes.singles} creates, one at a time)", f"{med[0]:.1f} ms")
    ok = row("create->IP p99", f"{med[1]:.1f} ms", "<= 100 ms", med[1] <= P99_TARGET * 1000)
    row("  from the create's return: p50 / p99", f"{med[2]:.1f} / {med[3]:.1f} ms")
    row("  the create request alone: p50", f"{med[4]:.1f} ms")
    middle = sorted(runs, key=lambda r: r.burst.all_ips)[len(runs) // 2].burst  # the median run
    return burst_rows(middle, sizes.burst, "burst", target=True) and ok


def report_bed(rates: dict[str, float], sizes: Sizes) -> None:
    for kind, rate in rates.items():
        row(f"  bed alone, no controller: {kind}", f"{rate:,.0f} /s")
    # What one assigned Service costs the bed: its create, the controller's two patches and Event.
    per = sum(1 / rate for rate in rates.values())
    row(f"  => bed's share of a burst of {sizes.burst:,}", f"{per * sizes.burst:.2f} s")


def report_rss(runs: list[RssFigures], paced: tuple[float, float], n: int) -> bool:
    """Worst run against the targets (each run: a fresh bed and controller)."""
    growths = [f.after - f.before for f in runs]
    worst = max(runs, key=lambda f: f.after - f.before)
    growth = worst.after - worst.before
    row("controller RSS, ready (1 Service)", f"{worst.before:.1f} MiB")
    ok = row(
        f"controller RSS growth, 0 -> {n:,} Services (worst)",
        f"{growth:.1f} MiB",
        f"<= 50 MB ({GROWTH_TARGET:.1f} MiB)",
        growth <= GROWTH_TARGET,
    )
    row("  per run", " / ".join(f"{g:.1f}" for g in growths) + " MiB")
    lost = " / ".join(f"{f.activations:.0f}, {f.fenced:.0f}" for f in runs)
    row("  per run: Lease regained, writes fenced", lost)
    total = max(f.after for f in runs)
    ok = (
        row(
            f"controller RSS total at {n:,} Services (worst)",
            f"{total:.1f} MiB",
            f"<= 200 MB ({TOTAL_TARGET:.1f} MiB)",
            total <= TOTAL_TARGET,
        )
        and ok
    )
    row("  controller peak RSS (VmHWM, worst)", f"{max(f.peak for f in runs):.1f} MiB")
    row("  growth when created one at a time instead", f"{paced[1] - paced[0]:.1f} MiB")
    burst_rows(worst.burst, n, "created at once (worst run)", target=False)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI: small sizes, gross failures only")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of singles, burst and the RSS burst (3; smoke 1)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.runs:
        sizes = Sizes(sizes.singles, sizes.burst, sizes.rss, args.runs)
    started = time.monotonic()
    print(
        f"controller convergence bench ({'smoke' if args.smoke else 'full'}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}\n"
        "bed API server: a separate process (python -m lbctl.lab.apiserver); controller: a "
        "separate lbctl-controller process (leader election on, one replica);\n"
        f"Services: IPv6 single-stack, no node ports; {sizes.runs} run(s), medians"
    )
    try:
        runs = [convergence_run(sizes) for _ in range(sizes.runs)]
        rates = bed_alone(sizes)
        rss = [rss_run(sizes) for _ in range(sizes.runs)]
        paced = rss_paced(sizes)
    except (TimeoutError, RuntimeError) as err:
        print(f"FAILED: {err}")
        return 1
    ok = report_runs(runs, sizes)
    report_bed(rates, sizes)
    ok = report_rss(rss, paced, sizes.rss) and ok
    print(f"took {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    if args.smoke:  # CI machines are noisy: only a gross failure fails
        return 1 if max(f.after for f in rss) > SMOKE_TOTAL_LIMIT else 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
