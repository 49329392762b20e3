"""Moving from MetalLB: its legacy ConfigMap format and the IPs it assigned are kept as they are."""

from __future__ import annotations

from pathlib import Path

from controller_bed import Bed, bed, condition, controller, ingress_history, wait_for

from lbctl.lab.controlplane import ControlPlane

METALLB = """\
address-pools:
- name: default
  protocol: layer2
  addresses:
  - 192.0.2.0/28
- name: other
  protocol: layer2
  auto-assign: false
  addresses:
  - 203.0.113.0/29
"""
# (name, IP MetalLB gave it, MetalLB's pool annotation key or None)
HELD = [
    ("web", "192.0.2.7", "metallb.universe.tf/ip-allocated-from-pool"),
    ("api", "192.0.2.1", "metallb.io/ip-allocated-from-pool"),
    ("db", "192.0.2.12", None),
    ("edge", "203.0.113.3", "metallb.universe.tf/ip-allocated-from-pool"),
    ("outside", "198.51.100.77", None),  # in no pool any more: kept all the same
]


def _hold(b: Bed, ns: str, name: str, ip: str, key: str | None) -> None:
    pool = "other" if ip.startswith("203.") else "default"
    annotations = {key: pool} if key else {}
    b.service(ns, name, annotations=annotations)
    status = {"loadBalancer": {"ingress": [{"ip": ip}]}}
    b.core.patch_namespaced_service_status(
        name, ns, {"status": status}, _content_type="application/merge-patch+json"
    )


def test_services_with_metallb_ips_keep_them_and_newcomers_avoid_them(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("apps")
        b.set_config(METALLB, key="config")
        for name, ip, key in HELD:
            _hold(b, ns, name, ip, key)
        for i in range(3):
            b.service(ns, f"new{i}")
        with controller(b):
            new = [b.wait_ips(ns, f"new{i}")[0] for i in range(3)]
            held = {ip for _, ip, _ in HELD}
            assert not held & set(new)
            assert len(set(new)) == 3
            for name, ip, _ in HELD:
                assert b.ips(ns, name) == [ip], name
            for name in ("web", "api", "db", "edge"):
                cond = wait_for(lambda n=name: condition(b.get(ns, n)), 5, f"condition on {name}")
                assert cond["reason"] == "Allocated"
            outside = wait_for(lambda: condition(b.get(ns, "outside")), 5, "condition on outside")
            assert (outside["status"], outside["reason"]) == ("True", "Restored")
        # Each held Service's ingress went from nothing to MetalLB's IP, and never changed again.
        history = ingress_history(b)
        for name, ip, _ in HELD:
            assert history[f"{ns}/{name}"] == [[], [ip]], name
