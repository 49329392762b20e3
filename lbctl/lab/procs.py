"""Child processes and bounded waits, shared by the lab CLI, the tests and the bench scripts."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

KILL_WAIT = 5.0  # s to reap a child after SIGKILL


class WaitTimeout(TimeoutError):
    """wait_for's condition did not hold in time; the message names what was awaited."""


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM a child we started (by its PID, through its Popen), SIGKILL it if it outlives
    `grace` seconds, and reap it. Nothing happens if it has exited already."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=KILL_WAIT)


@contextlib.contextmanager
def logged(
    cmd: list[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """cmd running with its stdout and stderr in `log`; stopped (stop()) on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        stop(proc)


def wait_for(
    pred: Callable[[], Any],
    timeout: float = 5.0,
    what: str = "condition",
    *,
    error: type[Exception] = WaitTimeout,
    interval: float = 0.02,
) -> Any:
    """Poll pred until it returns something truthy, and return that; raise `error` (WaitTimeout
    unless told otherwise) naming `what` after `timeout` seconds. pytest reports any exception
    as a failure, so tests need no AssertionError from product code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(interval)
    raise error(f"timed out after {timeout}s waiting for {what}")


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
