"""Test tiers: the marker comes from the folder; with CI=true a netns or e2e test may not skip."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

TIERS = ("unit", "component", "netns", "e2e")
# Tiers that need root and namespaces: CI has both, so a skip there hides a broken test.
MUST_RUN_IN_CI = frozenset({"netns", "e2e"})
TESTS_DIR = Path(__file__).parent


def tier_of(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(TESTS_DIR.resolve())
    except ValueError:
        return None
    return rel.parts[0] if rel.parts and rel.parts[0] in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(Path(str(item.fspath)))
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("CI") == "true"
        and tier_of(Path(str(item.fspath))) in MUST_RUN_IN_CI
    ):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: skipped in CI, where netns and e2e tests must run"
