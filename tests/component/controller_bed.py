"""Helpers for the controller's component tests: a bed on the real control plane (the session's,
one bed per test or module, its namespaces its own), the fault proxy its controllers talk
through, Service and ConfigMap builders, and polling helpers.

A bed's controllers run as ServiceAccounts of the bed's own namespace, bound to the rules of
deploy/rbac.yaml (its ClusterRole, and its Lease Role copied into that namespace), and they use
the bed's ConfigMap and Lease there. They watch Services cluster-wide, so a bed deletes its
Services at the end before the next one starts: no test sees another's.
"""

from __future__ import annotations

import copy
import itertools
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from service_history import ServiceHistory, ingress_ips

from controller.runner import Options
from controller.testing import ControllerThread
from lbctl.lab.controlplane import KUBECTL, ControlPlane
from lbctl.lab.faultproxy import FaultProxy
from lbctl.lab.pki import write_kubeconfig
from lbctl.lab.procs import wait_for

__all__ = ["ingress_ips", "wait_for"]  # re-exported for the tests

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
CONTROLLER_SA = "lbctl-controller"  # deploy/rbac.yaml's; a bed binds its accounts the same way
CONFIG_NAME = "lbctl-config"
CONDITION = "lbctl.io/IPAllocated"
MERGE = "application/merge-patch+json"
CLEANUP_TIMEOUT = 30.0  # deleting 1,000 Services takes a few seconds on 2 cores
_beds = itertools.count(1)


def lbctl_config(pools: str, *, allow_renumber: bool = False) -> str:
    """An lbctl-format config document; `pools` is the YAML list under `pools:`."""
    head = "apiVersion: lbctl.io/v1alpha1\nkind: Config\n"
    if allow_renumber:
        head += "allowRenumber: true\n"
    return head + "pools:\n" + pools


@dataclass(frozen=True)
class Grants:
    """What deploy/rbac.yaml gives the controller's ServiceAccount: ClusterRoles bound
    cluster-wide, and Roles bound in its own namespace (copied into each bed's)."""

    cluster_roles: tuple[str, ...]
    roles: tuple[dict[str, Any], ...]


def controller_grants() -> Grants:
    docs = [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]

    def binds_controller(doc: dict[str, Any]) -> bool:
        subjects = doc.get("subjects") or []
        return any(s["kind"] == "ServiceAccount" and s["name"] == CONTROLLER_SA for s in subjects)

    bound = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    bound = [d for d in bound if binds_controller(d)]
    role_names = {d["roleRef"]["name"] for d in bound if d["kind"] == "RoleBinding"}
    return Grants(
        tuple(d["roleRef"]["name"] for d in bound if d["kind"] == "ClusterRoleBinding"),
        tuple(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] in role_names),
    )


@dataclass
class Bed:
    """`prefix` names everything the bed makes: namespaces `<prefix>-<name>`, the controller's
    own `<prefix>-system` (ConfigMap, Lease, ServiceAccounts) and `<prefix>-default` (the
    admin kubeconfig's namespace, for kubectl)."""

    cp: ControlPlane
    proxy: FaultProxy
    core: client.CoreV1Api  # the admin, straight to the API server
    tmp: Path
    prefix: str
    admin_kubeconfig: Path
    history: ServiceHistory | None = None
    namespaces: list[str] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)

    @property
    def config_ns(self) -> str:
        return f"{self.prefix}-system"

    @property
    def config_name(self) -> str:
        return CONFIG_NAME

    @property
    def config_map(self) -> tuple[str, str]:
        return self.config_ns, CONFIG_NAME

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.core.api_client)

    def kubeconfig(self, identity: str) -> Path:
        """A kubeconfig through the fault proxy as ServiceAccount `identity` of the bed (made and
        bound on first use): the proxy's request log and rules know it by that name."""
        self.account(identity)
        path = self.tmp / f"kubeconfig-{identity}"
        return self.proxy.service_account_kubeconfig(self.config_ns, identity, path)

    def account(self, name: str) -> None:
        """ServiceAccount `name`, bound as deploy/rbac.yaml binds the controller's."""
        if name in self.accounts:
            return
        ns = self.config_ns
        sa = {"metadata": {"name": name, "namespace": ns}}
        self.core.create_namespaced_service_account(ns, sa)  # type: ignore[arg-type]
        self.accounts.add(name)
        grants = controller_grants()
        for role in grants.cluster_roles:
            binding = self._binding(f"{self.prefix}-{name}-{role}", "ClusterRole", role, name)
            self.rbac.create_cluster_role_binding(binding)  # type: ignore[arg-type]
        for doc in grants.roles:
            role = doc["metadata"]["name"]
            binding = self._binding(f"{role}-{name}", "Role", role, name)
            self.rbac.create_namespaced_role_binding(ns, binding)  # type: ignore[arg-type]
        # The API server authorizes from a cache its watch of the bindings fills: wait until
        # it has them, so that a first request right away is not a 403 of our own making.
        user = f"system:serviceaccount:{ns}:{name}"
        wait_for(lambda: self.allowed(user, "watch", "services"), 5, f"{user}'s bindings")
        wait_for(lambda: self.allowed(user, "update", "leases", ns), 5, f"{user}'s Lease Role")

    def allowed(self, user: str, verb: str, resource: str, namespace: str | None = None) -> bool:
        """What the API server's authorizer answers for `user` now (a SubjectAccessReview)."""
        group = "coordination.k8s.io" if resource == "leases" else ""
        attrs = {"verb": verb, "resource": resource, "group": group, "namespace": namespace}
        review = {"spec": {"user": user, "resourceAttributes": attrs}}
        api = client.AuthorizationV1Api(self.core.api_client)
        got: Any = api.create_subject_access_review(review, _preload_content=False)  # type: ignore[arg-type]
        return bool(json.loads(got.data)["status"].get("allowed"))

    def _binding(self, name: str, kind: str, role: str, account: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": self.config_ns}],
        }

    # --- objects -----------------------------------------------------------------------

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Namespace `<prefix>-<name>`, deleted with the bed; returns its name."""
        full = f"{self.prefix}-{name}"
        body = {"metadata": {"name": full, "labels": labels or {}}}
        self.core.create_namespace(body)  # type: ignore[arg-type]
        self.namespaces.append(full)
        return full

    def set_config(self, text: str, *, key: str = "config.yaml") -> None:
        """Create or replace the pool ConfigMap's data with one key."""
        ns, name = self.config_map
        body = {"metadata": {"name": name, "namespace": ns}, "data": {key: text}}
        try:
            self.core.read_namespaced_config_map(name, ns, _preload_content=False)
        except client.exceptions.ApiException:
            self.core.create_namespaced_config_map(ns, body)  # type: ignore[arg-type]
            return
        patch = {"data": {"config.yaml": None, "config": None, key: text}}
        self.core.patch_namespaced_config_map(name, ns, patch, _content_type=MERGE)

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

    def wait_pool(self, ns: str, name: str, timeout: float = 5.0) -> str:
        """The pool annotation, once there: the second patch of a write, after the status."""

        def pool() -> str | None:
            meta = (self.get(ns, name) or {}).get("metadata") or {}
            return (meta.get("annotations") or {}).get("lbctl.io/ip-allocated-from-pool")

        found: str = wait_for(pool, timeout, f"the pool annotation on {ns}/{name}")
        return found

    def wait_condition(
        self, ns: str, name: str, reason: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = condition(self.get(ns, name))
            return cond if cond is not None and cond["reason"] == reason else None

        return wait_for(check, timeout, f"condition {reason} on {ns}/{name}")

    # --- the end -----------------------------------------------------------------------

    def clean_up(self) -> None:
        """Delete the bed's Services (and wait until they are gone: the next bed's controller
        must not see them), then its namespaces (the API server finishes that on its own) and
        its ClusterRoleBindings."""
        for ns in self.namespaces:
            self.core.delete_collection_namespaced_service(ns)

        def gone() -> bool:
            return all(not self.core.list_namespaced_service(ns).items for ns in self.namespaces)

        wait_for(gone, CLEANUP_TIMEOUT, f"the Services of {self.prefix} to be deleted")
        for ns in self.namespaces:
            self.core.delete_namespace(ns)
        for name in self.accounts:
            for role in controller_grants().cluster_roles:
                self.rbac.delete_cluster_role_binding(f"{self.prefix}-{name}-{role}")


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
def bed(cp: ControlPlane, tmp: Path) -> Iterator[Bed]:
    """A bed on control plane `cp` (deploy/rbac.yaml applied): its namespaces, the Lease Role
    in its own, a fault proxy, and the Service history; all gone again on exit."""
    prefix = f"lbctl-t{next(_beds)}"
    admin = write_kubeconfig(
        tmp / "kubeconfig-admin", server=cp.url, ca=cp.pki.ca, namespace=f"{prefix}-default",
        client=cp.pki.issue(f"admin-{prefix}", "lbctl-admin", groups=["system:masters"]),
        user="lbctl-admin",
    )  # fmt: skip
    api_client = config.new_client_from_config(config_file=str(admin))
    with ExitStack() as stack:
        stack.callback(api_client.close)
        proxy = stack.enter_context(FaultProxy(cp))
        b = Bed(cp, proxy, client.CoreV1Api(api_client), tmp, prefix, admin)
        stack.callback(b.clean_up)
        b.namespace("system")
        b.namespace("default")
        for doc in controller_grants().roles:
            role = copy.deepcopy(doc)
            role["metadata"]["namespace"] = b.config_ns
            b.rbac.create_namespaced_role(b.config_ns, role)
        b.history = ServiceHistory(b.core, lambda ns: ns.startswith(f"{prefix}-"))
        stack.callback(b.history.stop)
        yield b


@contextmanager
def controller(b: Bed, identity: str = "controller", **options: Any) -> Iterator[ControllerThread]:
    opts = Options(
        kubeconfig=str(b.kubeconfig(identity)), metrics_port=0, config_map=b.config_map, **options
    )
    with ControllerThread(opts) as running:
        yield running


def kubectl(b: Bed, *args: str, timeout: float = 30) -> str:
    """Run the real kubectl as the admin, in the bed's default namespace; fail the test with
    its stderr on a non-zero exit."""
    cmd = [str(KUBECTL), f"--kubeconfig={b.admin_kubeconfig}"]
    cmd += [f"--cache-dir={b.tmp / 'kcache'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}{done.stdout}")
    return done.stdout


def ingress_history(b: Bed) -> dict[str, list[list[str]]]:
    """Every ingress IP list each of the bed's Services ("ns/name") had, in order."""
    assert b.history is not None
    return b.history.history()


def wait_quiet(b: Bed, identity: str, seconds: float = 1.0, timeout: float = 10.0) -> None:
    """Wait until `identity` has sent nothing through the proxy for `seconds`: at rest."""

    def quiet() -> bool:
        done = [r.time + r.duration for r in b.proxy.requests(identity=identity)]
        return time.time() - max(done, default=0.0) >= seconds

    wait_for(quiet, timeout, f"{identity} to be at rest")


def free_port() -> int:
    """A loopback port nobody listens on now (for a controller's metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
