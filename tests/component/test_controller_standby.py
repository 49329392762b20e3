"""A replica that may not write decides nothing; activated, it restores first, then assigns."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from controller_bed import bed, lbctl_config, wait_for

from controller.runner import Options
from controller.testing import ControllerThread
from lbctl.core.model import ServiceKey, service_key
from lbctl.lab.controlplane import ControlPlane

POOLS = '- name: public\n  addresses: ["192.0.2.0/29"]\n'


def test_standby_writes_nothing_until_activated_then_restores_before_assigning(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("apps")
        b.set_config(lbctl_config(POOLS))
        b.service(ns, "held")
        b.core.patch_namespaced_service_status(
            "held",
            ns,
            {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.0"}]}}},
            _content_type="application/merge-patch+json",
        )
        leading = threading.Event()
        opts = Options(
            kubeconfig=str(b.kubeconfig("standby")), metrics_port=0, config_map=b.config_map
        )
        with ControllerThread(opts, leader=leading.is_set) as ctl:
            operator = ctl.controller.operator
            b.service(ns, "early")
            seen = operator.events_seen
            b.service(ns, "barrier")
            wait_for(lambda: operator.events_seen > seen + 1, 5, "the standby to see events")
            assert b.ips(ns, "early") == []
            writes = [r for r in b.proxy.requests(identity="standby") if r.method != "GET"]
            assert writes == []
            leading.set()
            ctl.submit(operator.activate()).result(timeout=10)
            assert operator.active
            early = b.wait_ips(ns, "early")
            assert early != ["192.0.2.0"]
            assert b.ips(ns, "held") == ["192.0.2.0"]
            operator.deactivate()
            leading.clear()
            seen = operator.events_seen
            b.service(ns, "late")
            wait_for(lambda: operator.events_seen > seen, 5, "the event for late")
            assert b.ips(ns, "late") == []


def test_takeover_during_steady_churn_becomes_active_without_waiting_for_quiet(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("apps")
        b.set_config(lbctl_config('- name: public\n  addresses: ["192.0.2.0/24"]\n'))
        names = [f"s{i}" for i in range(20)]
        for name in names:
            b.service(ns, name)
        leading = threading.Event()
        stop = threading.Event()

        def churn() -> None:  # label edits back to back, bounded in time and by `stop`
            deadline = time.monotonic() + 15
            for i in range(100_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                b.patch(ns, names[i % len(names)], {"metadata": {"labels": {"n": str(i)}}})

        opts = Options(
            kubeconfig=str(b.kubeconfig("standby")), metrics_port=0, config_map=b.config_map
        )
        with ControllerThread(opts, leader=leading.is_set) as ctl:
            operator = ctl.controller.operator
            writer = threading.Thread(target=churn)
            writer.start()
            try:
                leading.set()
                ctl.submit(operator.activate())
                wait_for(lambda: operator.active, 10, "the replica to become active")
                assert writer.is_alive(), "activation waited for the churn to end"
            finally:
                stop.set()
                writer.join(10)
            held = [b.wait_ips(ns, name) for name in names]
            assert len({ip for ips in held for ip in ips}) == len(names)


def test_leader_resumed_after_a_missed_renewal_keeps_its_state_and_catches_up(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Suspended (renew deadline missed) and resumed (the Lease renewed before anyone took
    it): no second restore, the same IPs, and what changed meanwhile is decided."""
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("apps")
        b.set_config(lbctl_config(POOLS))
        leading = threading.Event()
        leading.set()
        opts = Options(
            kubeconfig=str(b.kubeconfig("leader")), metrics_port=0, config_map=b.config_map
        )
        with ControllerThread(opts, leader=leading.is_set) as ctl:
            operator = ctl.controller.operator

            async def suspend() -> None:
                operator.suspend()

            async def resume() -> bool:
                return operator.resume()

            async def missed() -> frozenset[ServiceKey]:  # read on the operator's own loop
                return operator.missed()

            b.service(ns, "kept")
            b.service(ns, "gone")
            kept = b.wait_ips(ns, "kept")
            b.wait_ips(ns, "gone")
            b.wait_pool(ns, "gone")
            leading.clear()
            ctl.submit(suspend()).result(timeout=5)
            b.core.delete_namespaced_service("gone", ns)
            b.service(ns, "new")
            # Both events, not any two: a status write still in flight at the suspension
            # shows up as an event too.
            both = {service_key(ns, "gone"), service_key(ns, "new")}
            wait_for(lambda: both <= ctl.submit(missed()).result(5), 5, "both events, suspended")
            assert b.ips(ns, "new") == []
            leading.set()
            assert ctl.submit(resume()).result(timeout=5)
            new = b.wait_ips(ns, "new")
            assert b.ips(ns, "kept") == kept
            assert operator.activations == 1  # restored once, at start-up; resumed without
            assert operator.reconciler.held(service_key(ns, "gone")) == ()
            assert new and new != kept


def test_lease_lost_and_renewed_during_a_restore_does_not_restart_it(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """A starved leader misses its renew deadline while listing (10,000 Services take longer
    than a renewal): the restore goes on, and once the Lease is renewed it decides."""
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("apps")
        b.set_config(lbctl_config(POOLS))
        b.service(ns, "waiting")
        leading = threading.Event()
        opts = Options(
            kubeconfig=str(b.kubeconfig("slow")), metrics_port=0, config_map=b.config_map
        )
        with ControllerThread(opts, leader=leading.is_set) as ctl:
            operator = ctl.controller.operator

            async def suspend() -> None:
                operator.suspend()

            async def resume() -> bool:
                return operator.resume()

            listing = re.compile(r"^/api/v1/services$")
            b.proxy.faults.delay(2.0, identity="slow", path=listing, verb="list", count=1)
            leading.set()
            activation = ctl.submit(operator.activate())
            wait_for(lambda: operator._restoring, 5, "the restore to start")
            leading.clear()
            ctl.submit(suspend()).result(timeout=5)
            leading.set()
            assert ctl.submit(resume()).result(timeout=5)
            activation.result(timeout=15)
            assert operator.active and operator.activations == 1
            b.wait_ips(ns, "waiting")
            restores = [  # the restore's paged listing (kopf's own lists without a limit)
                r
                for r in b.proxy.requests(identity="slow")
                if listing.match(r.path) and r.verb == "list" and "limit=" in r.query
            ]
            assert len(restores) == 1
