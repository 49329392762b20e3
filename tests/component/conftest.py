"""Fixtures for component tests: the session's real control plane (deploy/rbac.yaml applied) for
the controller's tests; the embedded API server, clients on it, kubectl and raw HTTP for that
server's own tests (test_apiserver_*)."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from lbctl.lab.apiserver import ApiServer
from lbctl.lab.controlplane import ControlPlane
from lbctl.lab.procs import wait_for

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane for the session (~6 s to start): each bed (controller_bed) keeps to
    namespaces of its own and removes its Services before the next starts."""
    with ControlPlane(tmp_path_factory.mktemp("control-plane")) as cp:
        cp.kubectl("apply", "-f", str(RBAC))
        yield cp


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(bookmark_interval=0.3) as server:
        yield server


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig", identity="tester")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=str(kubeconfig))
    yield c
    c.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Http:
    """Raw HTTP against the server, to assert on wire details the clients hide."""

    def __init__(self, port: int, token: str = "raw") -> None:
        self.port, self.token = port, token

    def conn(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = self.conn()
        try:
            data = None if body is None else json.dumps(body).encode()
            hdrs = {"Content-Type": ctype, "Authorization": f"Bearer {self.token}"}
            conn.request(method, path, body=data, headers={**hdrs, **(headers or {})})
            resp = conn.getresponse()
            raw = resp.read()
            parsed = json.loads(raw) if raw.strip().startswith(b"{") else raw.decode()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed)
        finally:
            conn.close()

    def watch(
        self, path: str, *, until: int = 1_000, timeout: float = 5.0
    ) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """Read watch events until `until` arrived, the stream ends, or `timeout` passes."""
        conn = self.conn(timeout)
        events: list[dict[str, Any]] = []
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            deadline = time.monotonic() + timeout
            while len(events) < until and time.monotonic() < deadline:
                try:
                    line = resp.readline()
                except TimeoutError:
                    break
                if not line:
                    break
                if line.strip():
                    events.append(json.loads(line))
            return headers, events
        finally:
            conn.close()


@pytest.fixture
def raw(api: ApiServer) -> Http:
    return Http(api.port)


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(KUBECTL), f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path}/kcache", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    return run


def svc(name: str, **spec: Any) -> dict[str, Any]:
    """A minimal Service body."""
    body = {"ports": [{"port": 80}], "selector": {"app": name}, **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture(name="svc")
def svc_fixture() -> Callable[..., dict[str, Any]]:
    return svc


@pytest.fixture
def http_to() -> type[Http]:
    """The raw HTTP helper class, for tests that start their own server."""
    return Http
