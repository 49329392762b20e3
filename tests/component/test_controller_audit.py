"""The controller under its own ServiceAccount, with deploy/rbac.yaml's rules and nothing else:
the API server's audit log shows every write it made, and not one of its requests was forbidden
(a 403 here is a rule missing from deploy/rbac.yaml)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller_bed import Bed, bed, lbctl_config, metric, wait_for

from controller.runner import Options
from controller.testing import ControllerThread
from lbctl.lab.controlplane import ControlPlane

ME = "auditee"
POOLS = '- name: public\n  addresses: ["192.0.2.0/31"]\n'  # two addresses: a third Service waits
READS = frozenset({"get", "list", "watch"})
WRITES = re.compile(r'^lbctl_api_writes_total\{kind="([^"]+)",result="([^"]+)"\} (\S+)$', re.M)
# The controller's write kinds (lbctl_api_writes_total{kind}) as the audit log names them.
KINDS = {
    ("patch", "services/status"): "status",
    ("patch", "services"): "metadata",
    ("create", "events"): "event",
}


def audited(cp: ControlPlane, user: str) -> list[dict[str, Any]]:
    """The audit log's completed requests of `user`."""
    found = []
    with cp.audit_log.open(encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            if entry["user"]["username"] == user and entry["stage"] == "ResponseComplete":
                found.append(entry)
    return found


def resource_of(entry: dict[str, Any]) -> str:
    ref = entry.get("objectRef") or {}
    sub = ref.get("subresource")
    return f"{ref.get('resource')}/{sub}" if sub else str(ref.get("resource"))


def written(metrics_text: str) -> Counter[tuple[str, str]]:
    """lbctl_api_writes_total by (kind, result), from the controller's own metrics."""
    return Counter(
        {(kind, result): int(float(value)) for kind, result, value in WRITES.findall(metrics_text)}
    )


def run_scenario(b: Bed, port: int) -> None:
    """Assign, exhaust the pool, refuse an annotation, free an address, break the config."""
    ns = b.namespace("apps")
    for name in ("a", "b", "c"):
        b.service(ns, name)
    b.service(ns, "bad", annotations={"lbctl.io/loadBalancerIPs": "not-an-ip"})
    b.wait_ips(ns, "a")
    b.wait_ips(ns, "b")
    b.wait_condition(ns, "c", "PoolExhausted")
    b.wait_condition(ns, "bad", "InvalidAnnotation")
    b.core.delete_namespaced_service("a", ns)
    b.wait_ips(ns, "c")
    b.set_config(lbctl_config('- name: broken\n  addresses: ["192.0.2.9-192.0.2.1"]\n'))
    wait_for(lambda: metric(port, "lbctl_config_stale ") == 1.0, 5, "the config to be stale")
    wait_for(
        lambda: metric(port, "lbctl_writes_queued ") == metric(port, "lbctl_writes_retrying ") == 0,
        10,
        "every write done",
    )


def test_audit_log_shows_every_write_of_the_controller_and_no_403(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        b.set_config(lbctl_config(POOLS))
        opts = Options(
            kubeconfig=str(b.kubeconfig(ME)),
            metrics_port=0,
            config_map=b.config_map,
            leader_elect=True,
            lease_namespace=b.config_ns,
            identity=ME,
        )
        with ControllerThread(opts) as ctl:
            wait_for(lambda: ctl.controller.operator.active, 10, "the controller to lead")
            run_scenario(b, ctl.controller.health.port)
        counted = written(ctl.controller.metrics.render().decode())
        user = f"system:serviceaccount:{b.config_ns}:{ME}"
        proxied = [r for r in b.proxy.requests(identity=ME) if r.verb not in READS]
        by_proxy = Counter((r.verb, r.path, r.status) for r in proxied)

        def audit_writes() -> Counter[tuple[str, str, int]]:
            return Counter(
                (e["verb"], urlsplit(e["requestURI"]).path, e["responseStatus"]["code"])
                for e in audited(control_plane, user)
                if e["verb"] not in READS
            )

        # The API server writes an audit line as it finishes a request: allow it a moment.
        wait_for(lambda: not by_proxy - audit_writes(), 5, "the audit log to show every write")
        assert audit_writes() == by_proxy
        entries = audited(control_plane, user)
        assert [e["requestURI"] for e in entries if e["responseStatus"]["code"] == 403] == []
        by_kind: Counter[tuple[str, str]] = Counter()
        for e in entries:
            kind = KINDS.get((e["verb"], resource_of(e)))
            if kind is not None:
                code = e["responseStatus"]["code"]
                by_kind[(kind, "ok" if code < 400 else str(code))] += 1
        print(f"\naudited_writes {sorted(by_kind.items())} requests={len(entries)}")
        assert by_kind == +Counter({k: n for k, n in counted.items() if k[0] in KINDS.values()})
        verbs = {(e["verb"], resource_of(e)) for e in entries if e["verb"] not in READS}
        assert verbs == {*KINDS, ("create", "leases"), ("update", "leases")}
