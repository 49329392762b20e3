"""Fixtures for namespace tests: root check, a shared 3-node bed, leak checks by name and PID."""

from __future__ import annotations

import gc
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from lbctl.lab import nsutil
from lbctl.lab.bed import Bed

FAILED_LOGS = Path(
    os.environ.get("LBCTL_FAILED_LOGS") or Path(tempfile.gettempdir()) / "lbctl-failed"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """A failed test's bed logs (every component's, speakers included) are copied to
    FAILED_LOGS/<test> before the bed is torn down, which removes its run directory."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        topology = getattr(getattr(value, "bed", value), "topology", None)
        logs = getattr(topology, "run_dir", None)
        if isinstance(logs, Path) and (logs / "logs").is_dir():
            target = FAILED_LOGS / re.sub(r"[^\w.-]+", "_", item.nodeid)
            shutil.copytree(logs / "logs", target, dirs_exist_ok=True)
            report.sections.append(("bed logs", f"copied to {target}"))
            return


def _bed_namespaces() -> set[str]:
    return {ns for ns in nsutil.list_netns() if ns.startswith("lbctl-")}


@pytest.fixture(scope="session", autouse=True)
def _needs_root_and_ip() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("namespace tests need root and iproute2")


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    """A 3-node bed with API server and kubelet, shared by a module's tests (each test uses its
    own object names and VIPs)."""
    before = _bed_namespaces()
    with Bed(nodes=3) as the_bed:
        yield the_bed
    # Every process of the bed was stopped by its PID in close(); Popen and pipe objects a
    # stopped thread left behind are collected here, not in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    leaked = _bed_namespaces() - before
    assert not leaked, f"namespaces left behind: {sorted(leaked)}"
