"""--dry-run on the real control plane: the controller decides as usual and logs every write it
would make (the object and the patch), and the API server's audit log shows it made none: no
Service patch, no Event, no Lease."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from controller_bed import bed, lbctl_config, metric, wait_for

from controller.runner import Options
from controller.testing import ControllerThread
from lbctl.lab.controlplane import ControlPlane

POOL = '- name: public\n  addresses: ["192.0.2.8/30"]\n'
READS = frozenset({"get", "list", "watch"})


def test_dry_run_logs_each_write_it_would_make_and_makes_none(
    control_plane: ControlPlane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    me = "dry"
    with bed(control_plane, tmp_path) as b:
        b.set_config(lbctl_config(POOL))
        ns = b.namespace("apps")
        opts = Options(
            kubeconfig=str(b.kubeconfig(me)), metrics_port=0, config_map=b.config_map,
            leader_elect=True, lease_namespace=b.config_ns, identity=me, dry_run=True,
        )  # fmt: skip
        with ControllerThread(opts) as ctl:
            b.service(ns, "web")

            def said(kind: str) -> list[str]:
                return [
                    r.getMessage()
                    for r in caplog.records
                    if r.getMessage().startswith(f"dry_run_write kind={kind} ")
                    and f"{ns}/web" in r.getMessage()
                ]

            (status,) = wait_for(lambda: said("status"), 10, "the status patch it would make")
            wait_for(lambda: said("metadata") and said("event"), 5, "the annotation and Event")
            port = ctl.controller.health.port
            assert metric(port, 'lbctl_api_writes_total{kind="status",result="dry_run"} ') == 1
            assert metric(port, "lbctl_leader ") == 1.0  # decides as if it led
        patch = json.loads(status.split(" patch=", 1)[1])
        assert patch["status"]["loadBalancer"]["ingress"][0]["ip"].startswith("192.0.2.")
        assert patch["status"]["conditions"][0]["reason"] == "Allocated"
        assert b.ips(ns, "web") == []  # nothing written
        assert b.events(ns, "web") == []
        writes = [r for r in b.proxy.requests(identity=me) if r.verb not in READS]
        assert writes == []  # no patch, no Event, no Lease
        leases = [r for r in b.proxy.requests(identity=me) if "/leases" in r.path]
        assert leases == []  # it does not campaign at all
