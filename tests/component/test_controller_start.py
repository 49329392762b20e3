"""Clear failures at start, on the real control plane: a missing Lease namespace, a missing pool
ConfigMap, one with no key the controller reads, an API server refusing its identity (401, 403).
Each is one ERROR line saying what is missing and what to do (repeated with backoff, not on every
attempt), the metric lbctl_controller_start_blocked{reason}, and /readyz 503 naming the reason;
each clears when the cause is fixed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_bed import Bed, bed, controller_grants, lbctl_config, metric, scrape, wait_for

from controller.runner import Options
from controller.testing import ControllerThread
from lbctl.core.reasons import StartBlock
from lbctl.lab.controlplane import ControlPlane

POOLS = '- name: public\n  addresses: ["192.0.2.0/30"]\n'
ATTEMPTS = 6  # Lease attempts (one per 0.5 s round) seen before counting ERROR lines: ~3 s


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with bed(control_plane, tmp_path_factory.mktemp("start")) as b:
        b.set_config(lbctl_config(POOLS))
        yield b


def blocked(port: int, reason: StartBlock) -> float | None:
    return metric(port, f'lbctl_controller_start_blocked{{reason="{reason}"}} ')


def errors(caplog: pytest.LogCaptureFixture, reason: StartBlock) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
        and r.getMessage().startswith(f"start_blocked reason={reason}")
    ]


def wait_blocked(port: int, reason: StartBlock, says: str) -> str:
    """Until the metric and /readyz both name `reason`; returns /readyz's body."""
    wait_for(lambda: blocked(port, reason) == 1.0, 10, f"{reason} in the metric")
    code, body = scrape(port, "/readyz")
    assert code == 503
    assert f"{reason}: " in body and says in body, body
    return body


def wait_unblocked(port: int, reason: StartBlock) -> None:
    wait_for(lambda: blocked(port, reason) == 0.0, 10, f"{reason} cleared")
    wait_for(lambda: scrape(port, "/readyz")[0] == 200, 10, "/readyz 200")


def lease_attempts(b: Bed, identity: str) -> int:
    return sum(1 for r in b.proxy.requests(identity=identity) if "/leases" in r.path)


def grant_lease_role(b: Bed, namespace: str, identity: str) -> None:
    """deploy/rbac.yaml's Role for the controller, and its binding, in `namespace`."""
    for doc in controller_grants().roles:
        role: dict[str, Any] = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
        b.rbac.create_namespaced_role(namespace, role)
        binding = {
            "metadata": {"name": f"{doc['metadata']['name']}-{identity}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": doc["metadata"]["name"],
            },
            "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": b.config_ns}],
        }  # fmt: skip
        b.rbac.create_namespaced_role_binding(namespace, binding)  # type: ignore[arg-type]


def test_missing_lease_namespace_is_one_error_a_metric_and_readyz_until_created(
    world: Bed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    b, me = world, "no-lease-ns"
    absent = f"{b.prefix}-absent"
    opts = Options(
        kubeconfig=str(b.kubeconfig(me)), metrics_port=0, config_map=b.config_map,
        leader_elect=True, lease_namespace=absent, identity=me,
    )  # fmt: skip
    with ControllerThread(opts) as ctl:
        port = ctl.controller.health.port
        body = wait_blocked(port, StartBlock.LEASE_NAMESPACE_MISSING, f"namespace {absent}")
        assert "--namespace" in body  # what to do
        wait_for(lambda: lease_attempts(b, me) >= ATTEMPTS, 10, f"{ATTEMPTS} Lease attempts")
        assert len(errors(caplog, StartBlock.LEASE_NAMESPACE_MISSING)) == 1  # not one per try
        b.namespace("absent")
        grant_lease_role(b, absent, me)
        wait_unblocked(port, StartBlock.LEASE_NAMESPACE_MISSING)
        wait_for(lambda: ctl.controller.operator.active, 10, "the controller to lead")


def test_lease_namespace_defaults_to_the_config_maps(world: Bed) -> None:
    kubeconfig = str(world.kubeconfig("defaults"))
    opts = Options(kubeconfig, ("elsewhere", "pools"), leader_elect=True, metrics_port=0)
    ctl = ControllerThread(opts)
    try:
        assert ctl.controller.lease_namespace == "elsewhere"
    finally:
        ctl.controller.close()


def test_missing_config_map_then_a_wrong_key_then_a_good_one(
    world: Bed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    b, name = world, "not-yet"
    opts = Options(
        kubeconfig=str(b.kubeconfig("no-config")), metrics_port=0, config_map=(b.config_ns, name)
    )
    with ControllerThread(opts) as ctl:
        port = ctl.controller.health.port
        body = wait_blocked(port, StartBlock.CONFIG_MAP_MISSING, f"{b.config_ns}/{name} not found")
        assert 'data["config.yaml"]' in body and "--config-map" in body
        assert len(errors(caplog, StartBlock.CONFIG_MAP_MISSING)) == 1
        cm = {"metadata": {"name": name, "namespace": b.config_ns}, "data": {"pools.yaml": POOLS}}
        b.core.create_namespaced_config_map(b.config_ns, cm)  # type: ignore[arg-type]
        body = wait_blocked(port, StartBlock.CONFIG_KEY_MISSING, "its keys: pools.yaml")
        assert blocked(port, StartBlock.CONFIG_MAP_MISSING) == 0.0
        assert len(errors(caplog, StartBlock.CONFIG_KEY_MISSING)) == 1
        fixed = {"data": {"pools.yaml": None, "config.yaml": lbctl_config(POOLS)}}
        b.core.patch_namespaced_config_map(name, b.config_ns, fixed)
        wait_unblocked(port, StartBlock.CONFIG_KEY_MISSING)


def test_unaccepted_credentials_are_unauthorized(
    world: Bed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    b = world
    doc = yaml.safe_load(b.kubeconfig("bad-token").read_text())
    doc["users"][0]["user"]["token"] = "not-a-token"
    bad = tmp_path / "kubeconfig-bad"
    bad.write_text(yaml.safe_dump(doc))
    opts = Options(
        kubeconfig=str(bad), metrics_port=0, config_map=b.config_map, leader_elect=True,
        lease_namespace=b.config_ns, identity="bad-token",
    )  # fmt: skip
    with ControllerThread(opts) as ctl:
        body = wait_blocked(ctl.controller.health.port, StartBlock.UNAUTHORIZED, "HTTP 401")
        assert "token" in body  # what to check
        assert len(errors(caplog, StartBlock.UNAUTHORIZED)) == 1


def test_identity_without_rules_is_forbidden(world: Bed, tmp_path: Path) -> None:
    b, me = world, "no-rules"
    sa = {"metadata": {"name": me, "namespace": b.config_ns}}
    b.core.create_namespaced_service_account(b.config_ns, sa)  # type: ignore[arg-type]
    kubeconfig = b.proxy.service_account_kubeconfig(b.config_ns, me, tmp_path / "kc")
    opts = Options(
        kubeconfig=str(kubeconfig), metrics_port=0, config_map=b.config_map, leader_elect=True,
        lease_namespace=b.config_ns, identity=me,
    )  # fmt: skip
    with ControllerThread(opts) as ctl:
        body = wait_blocked(ctl.controller.health.port, StartBlock.FORBIDDEN, "HTTP 403")
        assert "deploy/rbac.yaml" in body
