"""The import contract that keeps controller.testing out of product code names every controller
module: a module added later is covered, or this test says which to add."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_testing_contract_lists_every_product_module_of_the_controller() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [
        c for c in contracts["contracts"] if c.get("forbidden_modules") == ["controller.testing"]
    ]
    modules = {f"controller.{p.stem}" for p in (ROOT / "controller").glob("*.py")}
    product = modules - {"controller.__init__", "controller.testing"}
    assert product - set(contract["source_modules"]) == set()
