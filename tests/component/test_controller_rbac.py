"""Least privilege, from the API server's audit log: the controller runs a realistic scenario
(Services created, the pool full, a config change, a Service deleted, a write conflict, the
leadership handed over) under deploy/rbac.yaml's rules only; not one of its requests is
forbidden, every (resource, verb) its Role and ClusterRole grant is one it used, and its one
ConfigMap is watched in its namespace with a fieldSelector on its name.

That removing any rule breaks it is checked two ways: for real once (a copy of the ClusterRole
without `services/status patch` makes the controller's status writes 403, which this test's own
check catches), and for every rule by the audit log: each granted pair was used, no pair is
granted by two rules, and the account holds no other grants, so without that rule the same
request would be refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from controller_bed import RBAC, Bed, bed, lbctl_config, metric, wait_for

from controller.runner import Options
from controller.testing import ControllerThread
from lbctl.lab.controlplane import ControlPlane

POOL = '- name: public\n  addresses: ["192.0.2.0/31"]\n'  # two addresses: the third waits
MORE = '- name: more\n  addresses: ["198.51.100.0/30"]\n'
Pair = tuple[str, str]  # (resource[/subresource], verb)


def controller_rules() -> list[tuple[str, dict[str, Any]]]:
    """deploy/rbac.yaml's rules for the controller's ServiceAccount: (role kind, rule)."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    bound = {
        (d["roleRef"]["kind"], d["roleRef"]["name"])
        for d in docs
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s["name"] == "lbctl-controller" for s in d.get("subjects") or [])
    }
    return [
        (d["kind"], rule)
        for d in docs
        if (d["kind"], d["metadata"]["name"]) in bound
        for rule in d["rules"]
    ]


def pairs(rule: dict[str, Any]) -> set[Pair]:
    return {(res, verb) for res in rule["resources"] for verb in rule["verbs"]}


def requests_of(cp: ControlPlane, users: set[str]) -> list[dict[str, Any]]:
    """Resource requests of `users` in the audit log, one entry per request (any stage: a
    watch still open has only its ResponseStarted line)."""
    seen: dict[str, dict[str, Any]] = {}
    with cp.audit_log.open(encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            if entry["user"]["username"] in users and entry.get("objectRef"):
                seen[entry["auditID"]] = entry
    return list(seen.values())


def pair_of(entry: dict[str, Any]) -> Pair:
    ref = entry["objectRef"]
    sub = ref.get("subresource")
    return (f"{ref['resource']}/{sub}" if sub else ref["resource"], entry["verb"])


def forbidden(entries: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e['requestURI']}"
        for e in entries
        if (e.get("responseStatus") or {}).get("code") == 403
    ]


def user(b: Bed, identity: str) -> str:
    return f"system:serviceaccount:{b.config_ns}:{identity}"


def options(b: Bed, identity: str, **kw: Any) -> Options:
    return Options(
        kubeconfig=str(b.kubeconfig(identity)), metrics_port=0, config_map=b.config_map,
        identity=identity, instance=identity, **kw,
    )  # fmt: skip


def scenario(b: Bed) -> None:
    """Two replicas; the leader assigns, waits, reassigns on a config change, releases on a
    delete, meets a conflict; then it steps down and the standby takes over."""
    ns = b.namespace("apps")
    b.proxy.faults.error(
        status=409, count=1, identity="rbac-a", verb="patch", path=f"/api/v1/namespaces/{ns}/"
    )
    leader = ControllerThread(options(b, "rbac-a", leader_elect=True, lease_namespace=b.config_ns))
    standby = ControllerThread(options(b, "rbac-b", leader_elect=True, lease_namespace=b.config_ns))
    with leader:
        wait_for(lambda: leader.controller.operator.active, 10, "rbac-a to lead")
        with standby:
            for name in ("a", "b", "c"):
                b.service(ns, name)
            b.wait_ips(ns, "a")
            b.wait_ips(ns, "b")
            b.wait_condition(ns, "c", "PoolExhausted")
            b.set_config(lbctl_config(POOL + MORE))
            b.wait_ips(ns, "c")
            b.core.delete_namespaced_service("a", ns)
            port = leader.controller.health.port
            wait_for(lambda: metric(port, "lbctl_writes_queued ") == 0, 10, "writes done")
            leader.stop()  # releases the Lease
            wait_for(lambda: standby.controller.operator.active, 10, "rbac-b to take over")
            b.service(ns, "d")
            b.wait_ips(ns, "d")


def test_the_controller_uses_every_rule_it_is_granted_and_needs_no_other(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    rules = controller_rules()
    granted: dict[Pair, int] = {}
    for _, rule in rules:
        for pair in pairs(rule):
            granted[pair] = granted.get(pair, 0) + 1
    assert [p for p, n in granted.items() if n > 1] == []  # one rule per pair
    with bed(control_plane, tmp_path) as b:
        b.set_config(lbctl_config(POOL))
        scenario(b)
        users = {user(b, "rbac-a"), user(b, "rbac-b")}
        entries = requests_of(control_plane, users)
    assert forbidden(entries) == []
    used = {pair_of(e) for e in entries}
    print(f"\nrbac_used {sorted(used)}")
    assert set(granted) - used == set()  # nothing granted that it never used
    assert used - set(granted) == set()
    config_watches = [e["requestURI"] for e in entries if pair_of(e) == ("configmaps", "watch")]
    assert config_watches
    for uri in config_watches:
        assert uri.startswith(f"/api/v1/namespaces/{b.config_ns}/configmaps?"), uri
        assert f"fieldSelector=metadata.name%3D{b.config_name}" in uri, uri


def test_a_removed_rule_is_a_403_the_check_above_reports(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        b.set_config(lbctl_config(POOL))
        me = "pruned"
        b.kubeconfig(me)  # bound as deploy/rbac.yaml binds the controller
        cluster_role = b.rbac.read_cluster_role("lbctl-controller", _preload_content=False)
        pruned = json.loads(cluster_role.data)
        kept = [r for r in pruned["rules"] if ("services/status", "patch") not in pairs(r)]
        assert len(kept) == len(pruned["rules"]) - 1
        doc = {"metadata": {"name": f"{b.prefix}-pruned"}, "rules": copy.deepcopy(kept)}
        b.rbac.create_cluster_role(doc)  # type: ignore[arg-type]
        binding = f"{b.prefix}-{me}-lbctl-controller"  # the bed's, replaced (roleRef is fixed)
        b.rbac.delete_cluster_role_binding(binding)
        b.rbac.create_cluster_role_binding(  # type: ignore[arg-type]
            {
                "metadata": {"name": binding},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": doc["metadata"]["name"],
                },
                "subjects": [{"kind": "ServiceAccount", "name": me, "namespace": b.config_ns}],
            }
        )
        who = user(b, me)
        wait_for(lambda: b.allowed(who, "watch", "services"), 5, f"{who}'s new binding")
        try:
            ns = b.namespace("apps")
            with ControllerThread(options(b, me), leader=lambda: True):
                b.service(ns, "x")

                def refused() -> list[str]:
                    return forbidden(requests_of(control_plane, {user(b, me)}))

                found = wait_for(refused, 10, "a 403 for the pruned identity")
            assert any("/services/x/status" in r for r in found), found
        finally:
            b.rbac.delete_cluster_role(doc["metadata"]["name"])
