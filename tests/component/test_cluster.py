"""The real control plane the bed builds (tools/kube, lbctl/lab/controlplane.py): kubectl's
everyday verbs work against it, RBAC holds, and lbctl's identities are what deploy/rbac.yaml
grants."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.lab.controlplane import KUBECTL, ControlPlane

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "rbac.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("cluster")) as cp:
        yield cp


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(KUBECTL), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, timeout=60, check=False, input=stdin,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done


CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  colour: {colour}
"""


def test_kubectl_version_reports_a_1_37_server(cluster: ControlPlane) -> None:
    out = json.loads(kubectl(cluster.admin_kubeconfig, "version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == "v1.37.2"
    assert (out["serverVersion"]["major"], out["serverVersion"]["minor"]) == ("1", "37")


def test_apply_validates_diffs_and_applies_server_side(cluster: ControlPlane) -> None:
    admin = cluster.admin_kubeconfig
    kubectl(admin, "create", "namespace", "apply-test")
    kubectl(admin, "apply", "-f", "-", stdin=CONFIGMAP.format(ns="apply-test", colour="red"))
    bad = CONFIGMAP.format(ns="apply-test", colour="red").replace("\ndata:", "\ndta:")
    refused = kubectl(admin, "apply", "-f", "-", stdin=bad, check=False)
    assert refused.returncode != 0 and 'unknown field "dta"' in refused.stderr
    changed = CONFIGMAP.format(ns="apply-test", colour="blue")
    diff = kubectl(admin, "diff", "-f", "-", stdin=changed, check=False)
    assert diff.returncode == 1, diff.stderr
    assert "-  colour: red" in diff.stdout and "+  colour: blue" in diff.stdout
    got = kubectl(admin, "get", "configmap", "settings", "-n", "apply-test", "-o", "json").stdout
    assert json.loads(got)["data"]["colour"] == "red", "kubectl diff must not write"
    kubectl(
        admin, "apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", "-",
        stdin=changed,
    )  # fmt: skip
    got = json.loads(kubectl(
        admin, "get", "configmap", "settings", "-n", "apply-test", "-o", "json",
        "--show-managed-fields",
    ).stdout)  # fmt: skip
    assert got["data"]["colour"] == "blue"
    assert "test" in {m["manager"] for m in got["metadata"]["managedFields"]}


def test_rbac_gives_the_controller_its_rules_and_nothing_else(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    admin = cluster.admin_kubeconfig
    kubectl(admin, "apply", "-f", str(RBAC))
    sa = cluster.service_account_kubeconfig("lbctl-system", "lbctl-controller", tmp_path / "sa")

    def can(*args: str) -> bool:
        done = kubectl(sa, "auth", "can-i", *args, check=False)
        return done.stdout.strip() == "yes"

    assert can("watch", "services", "--all-namespaces")
    assert can("patch", "services", "--subresource=status", "-n", "default")
    assert can("update", "leases", "-n", "lbctl-system")
    assert not can("update", "leases", "-n", "kube-system")
    assert can("patch", "services", "-n", "default"), "the allocated-from-pool annotation"
    assert not can("update", "services", "-n", "default")
    assert not can("delete", "services", "-n", "default")
    assert not can("create", "pods", "-n", "default")
    assert kubectl(admin, "auth", "can-i", "create", "pods").stdout.strip() == "yes"
