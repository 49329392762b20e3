"""`lbctl-controller` as a separate process: serve, be SIGKILLed, restart with 0 IP changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from controller_bed import Bed, bed, free_port, ingress_history, lbctl_config, scrape, wait_for

from lbctl.lab import procs
from lbctl.lab.controlplane import ControlPlane

BIN = Path(sys.executable).parent / "lbctl-controller"
POOL_A = '- name: a\n  addresses: ["192.0.2.0/25"]\n'
POOL_B = '- name: b\n  addresses: ["203.0.113.0/25"]\n'
SERVICES = 100


@contextmanager
def process(b: Bed, identity: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    cmd = [
        str(BIN),
        f"--kubeconfig={b.kubeconfig(identity)}",
        f"--metrics-bind-address=127.0.0.1:{port}",
        f"--instance={identity}",
        f"--config-map={b.config_ns}/{b.config_name}",
        f"--namespace={b.config_ns}",  # its Lease, where its Role lets it write one
    ]
    env = {**os.environ, "KUBECACHEDIR": str(b.tmp / "kcache")}
    with procs.logged(cmd, log, env) as proc:
        wait_for(lambda: _ready(port, proc, log), 20, f"{identity} /readyz")
        yield proc, port


def _ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"controller exited {proc.returncode}: {log.read_text()[-2000:]}")
    try:
        return scrape(port, "/readyz")[0] == 200
    except OSError:
        return False


def test_sigkill_and_restart_with_reordered_pools_changes_no_ip(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("fleet")
        b.set_config(lbctl_config(POOL_A + POOL_B))
        for i in range(SERVICES // 2):  # half exist before the first start
            b.service(ns, f"s{i:03}", annotations=_wants(i))
        with process(b, "controller-1", tmp_path / "c1.log") as (first, _):
            for i in range(SERVICES // 2, SERVICES):
                b.service(ns, f"s{i:03}", annotations=_wants(i))
            before = {f"s{i:03}": b.wait_ips(ns, f"s{i:03}", timeout=20) for i in range(SERVICES)}
            # Settled: the annotation (written after the status) is on every Service too.
            wait_for(lambda: all(_annotated(b, ns, n) for n in before), 10, "pool annotations")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert len({ip for ips in before.values() for ip in ips}) == SERVICES
        b.set_config(lbctl_config(POOL_B + POOL_A))  # pool list reordered while down
        b.service(ns, "newcomer")
        with process(b, "controller-2", tmp_path / "c2.log") as (second, port):
            new = b.wait_ips(ns, "newcomer", timeout=10)
            assert new[0] not in {ip for ips in before.values() for ip in ips}
            after = {name: b.ips(ns, name) for name in before}
            assert scrape(port, "/livez")[0] == 200
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=10) == 0
        assert after == before
        history = ingress_history(b)
        assert all(history[f"{ns}/{name}"] == [[], ips] for name, ips in before.items())
        # The second process wrote nothing to the Services the first one had assigned.
        rewritten = [
            r.path
            for r in b.proxy.requests(identity="controller-2")
            if r.verb == "patch" and "/services/s" in r.path
        ]
        assert rewritten == []


def _wants(i: int) -> dict[str, str]:
    return {"lbctl.io/address-pool": "b"} if i % 3 == 0 else {}


def _annotated(b: Bed, ns: str, name: str) -> bool:
    body = b.get(ns, name)
    return body is not None and "lbctl.io/ip-allocated-from-pool" in (
        body["metadata"].get("annotations") or {}
    )
