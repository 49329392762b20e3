"""The functional core stays pure: lbctl.core imports only the standard library, and no I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "lbctl" / "core"
# Standard-library modules that mean I/O, concurrency, randomness or the clock.
IMPURE_STDLIB = frozenset(
    {
        "asyncio", "socket", "subprocess", "threading", "multiprocessing", "time",
        "os", "io", "pathlib", "shutil", "tempfile", "random", "secrets", "select", "selectors",
        "signal", "logging", "urllib", "http", "ssl", "sqlite3", "fcntl",
    }
)  # fmt: skip
IMPURE_BUILTINS = frozenset({"open", "print", "input", "exec", "eval"})
# datetime may format a timestamp it is given, never read the clock.
CLOCK_READS = frozenset({"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp"})


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_only_pure_stdlib(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    foreign = {
        root
        for root in imported_roots(tree)
        if root != "lbctl" and (root not in sys.stdlib_module_names or root in IMPURE_STDLIB)
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_only_core_of_lbctl(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    outside = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("lbctl")
        and not node.module.startswith("lbctl.core")
    ]
    assert not outside, f"{path.name} imports {outside}"


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_calls_no_io_builtin(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & IMPURE_BUILTINS, f"{path.name} calls {sorted(calls & IMPURE_BUILTINS)}"


def test_layer_check_catches_an_impure_import() -> None:
    tree = ast.parse("import socket\nfrom kopf import on\nimport ipaddress\n")
    roots = imported_roots(tree)
    assert roots == {"socket", "kopf", "ipaddress"}


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_never_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    reads = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    } & CLOCK_READS
    assert not reads, f"{path.name} reads the clock: {sorted(reads)}"
