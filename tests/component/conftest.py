"""Fixtures for component tests: the session's real control plane (deploy/rbac.yaml applied)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.lab.controlplane import ControlPlane

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane for the session (~6 s to start): each bed (controller_bed) keeps to
    namespaces of its own and removes its Services before the next starts."""
    with ControlPlane(tmp_path_factory.mktemp("control-plane")) as cp:
        cp.kubectl("apply", "-f", str(RBAC))
        yield cp
