"""A controller started without a valid pool ConfigMap: it keeps the IPs Services hold, says why
newcomers wait, and assigns once a good config arrives. A module of its own: its bed must be
the only one whose controller runs (controllers watch Services cluster-wide)."""

from __future__ import annotations

from pathlib import Path

from controller_bed import bed, condition, controller, lbctl_config, metric

from lbctl.lab.controlplane import ControlPlane

POOLS = """\
- name: public
  addresses: ["192.0.2.0/28"]
- name: tiny
  addresses: ["192.0.2.64/31"]
  autoAssign: false
- name: edge
  addresses: ["192.0.2.80/31"]
  autoAssign: false
"""  # test_controller_badinput.py's


def test_start_without_valid_config_keeps_ips_and_explains(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("apps")
        b.service(ns, "holder")
        status = {"loadBalancer": {"ingress": [{"ip": "192.0.2.3"}]}}
        b.core.patch_namespaced_service_status(
            "holder", ns, {"status": status}, _content_type="application/merge-patch+json"
        )
        b.service(ns, "newcomer")
        b.set_config("pools: [unclosed")
        with controller(b) as ctl:
            cond = b.wait_condition(ns, "newcomer", "ConfigInvalid")
            where = f"configmap {b.config_ns}/{b.config_name}"
            assert cond["message"].startswith(f"no valid config in force: {where}")
            assert b.ips(ns, "holder") == ["192.0.2.3"]
            assert metric(ctl.controller.health.port, "lbctl_config_loaded ") == 0.0
            b.set_config(lbctl_config(POOLS))
            [ip] = b.wait_ips(ns, "newcomer")
            assert ip != "192.0.2.3"
            assert b.ips(ns, "holder") == ["192.0.2.3"]
            assert condition(b.get(ns, "holder")) is not None
