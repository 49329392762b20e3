"""Helpers for the controller's component tests: a bed (API server + admin client + a
controller kubeconfig), Service and ConfigMap builders, and polling helpers."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from controller.runner import ControllerThread, Options
from lbctl.lab.apiserver import ApiServer
from lbctl.lab.procs import wait_for

CONFIG_NS, CONFIG_NAME = "lbctl-system", "lbctl-config"
CONDITION = "lbctl.io/IPAllocated"
MERGE = "application/merge-patch+json"


def lbctl_config(pools: str, *, allow_renumber: bool = False) -> str:
    """An lbctl-format config document; `pools` is the YAML list under `pools:`."""
    head = "apiVersion: lbctl.io/v1alpha1\nkind: Config\n"
    if allow_renumber:
        head += "allowRenumber: true\n"
    return head + "pools:\n" + pools


@dataclass
class Bed:
    api: ApiServer
    core: client.CoreV1Api
    tmp: Path

    def kubeconfig(self, identity: str) -> Path:
        return self.api.write_kubeconfig(self.tmp / f"kubeconfig-{identity}", identity=identity)

    # --- objects -----------------------------------------------------------------------

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        body = {"metadata": {"name": name, "labels": labels or {}}}
        self.core.create_namespace(body)  # type: ignore[arg-type]
        return name

    def set_config(self, text: str, *, key: str = "config.yaml") -> None:
        """Create or replace the pool ConfigMap's data with one key."""
        body = {"metadata": {"name": CONFIG_NAME, "namespace": CONFIG_NS}, "data": {key: text}}
        try:
            self.core.read_namespaced_config_map(CONFIG_NAME, CONFIG_NS, _preload_content=False)
        except client.exceptions.ApiException:
            self.core.create_namespaced_config_map(CONFIG_NS, body)  # type: ignore[arg-type]
            return
        patch = {"data": {"config.yaml": None, "config": None, key: text}}
        self.core.patch_namespaced_config_map(CONFIG_NAME, CONFIG_NS, patch, _content_type=MERGE)

    def service(self, ns: str, name: str, **kw: Any) -> dict[str, Any]:
        return self.raw(
            self.core.create_namespaced_service(
                ns, service_body(name, **kw), _preload_content=False
            )
        )

    def get(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.raw(self.core.read_namespaced_service(name, ns, _preload_content=False))
        except client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.raw(
            self.core.patch_namespaced_service(
                name, ns, patch, _preload_content=False, _content_type=MERGE
            )
        )

    def events(self, ns: str, name: str | None = None) -> list[dict[str, Any]]:
        found = self.raw(self.core.list_namespaced_event(ns, _preload_content=False))["items"]
        return [e for e in found if name is None or e["involvedObject"]["name"] == name]

    @staticmethod
    def raw(resp: Any) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(resp.data)
        return body

    # --- waiting -----------------------------------------------------------------------

    def ips(self, ns: str, name: str) -> list[str]:
        return ingress_ips(self.get(ns, name))

    def wait_ips(self, ns: str, name: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        return wait_for(
            lambda: (ips := self.ips(ns, name)) and len(ips) >= count and ips,
            timeout,
            f"{count} IP(s) on {ns}/{name}",
        )

    def wait_condition(
        self, ns: str, name: str, reason: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = condition(self.get(ns, name))
            return cond if cond is not None and cond["reason"] == reason else None

        return wait_for(check, timeout, f"condition {reason} on {ns}/{name}")


def service_body(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    ports: tuple[int, ...] = (80,),
    lb_class: str | None = None,
    type_: str = "LoadBalancer",
    **spec: Any,
) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "type": type_,
        "ports": [{"port": p, "name": f"p{p}"} for p in ports],
        "selector": {"app": name},
        **spec,
    }
    if lb_class:
        body_spec["loadBalancerClass"] = lb_class
    meta: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body_spec}


def ingress_ips(body: dict[str, Any] | None) -> list[str]:
    if body is None:
        return []
    ingress = ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [e["ip"] for e in ingress if "ip" in e]


def condition(body: dict[str, Any] | None) -> dict[str, Any] | None:
    if body is None:
        return None
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == CONDITION:
            return dict(cond)
    return None


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metric(port: int, line_prefix: str) -> float | None:
    """The value of the first sample line starting with line_prefix, e.g. 'lbctl_config_stale '."""
    _, text = scrape(port)
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


@contextmanager
def bed(tmp: Path) -> Iterator[Bed]:
    with ApiServer(bookmark_interval=3600) as api:
        path = api.write_kubeconfig(tmp / "kubeconfig-admin", identity="admin")
        api_client = config.new_client_from_config(config_file=str(path))
        try:
            b = Bed(api, client.CoreV1Api(api_client), tmp)
            b.namespace(CONFIG_NS)
            yield b
        finally:
            api_client.close()


@contextmanager
def controller(b: Bed, identity: str = "controller", **options: Any) -> Iterator[ControllerThread]:
    opts = Options(kubeconfig=str(b.kubeconfig(identity)), metrics_port=0, **options)
    with ControllerThread(opts) as running:
        yield running


KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


def kubectl(b: Bed, *args: str, timeout: float = 30) -> str:
    """Run the real kubectl as the admin; fail the test with its stderr on a non-zero exit."""
    import subprocess

    cmd = [str(KUBECTL), f"--kubeconfig={b.tmp / 'kubeconfig-admin'}"]
    cmd += [f"--cache-dir={b.tmp / 'kcache'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}{done.stdout}")
    return done.stdout


def ingress_history(api: ApiServer) -> dict[str, list[list[str]]]:
    """Every ingress IP list each Service ("ns/name") had, in order, from the bed's history."""

    def collect(store: Any) -> dict[str, list[list[str]]]:
        found: dict[str, list[list[str]]] = {}
        for event in store.history:
            if event.key != "v1/services" or event.type == "DELETED":
                continue
            meta = event.obj["metadata"]
            seq = found.setdefault(f"{meta['namespace']}/{meta['name']}", [])
            ips = ingress_ips(event.obj)
            if not seq or seq[-1] != ips:
                seq.append(ips)
        return found

    result: dict[str, list[list[str]]] = api.call(collect)
    return result


def free_port() -> int:
    """A loopback port nobody listens on now (for a controller's metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
