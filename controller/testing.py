"""Test scaffolding, as kopf ships kopf.testing: a controller replica in its own thread and event
loop, and a way to run coroutines on that loop. For tests and benches only: product code never
imports this module (an import-linter contract in pyproject.toml holds that).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from controller.runner import Controller, Options

T = TypeVar("T")


class ControllerThread:
    """A controller in its own thread and event loop: start() waits until it has restored and is
    ready (or, with `wait_ready=False`, only until its loop runs); stop() ends it."""

    def __init__(self, options: Options, *, leader: Callable[[], bool] | None = None) -> None:
        self.controller = Controller(options, leader=leader)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="lbctl-controller", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.controller.run(stop_flag=self._stop))
        except BaseException as err:  # surfaced by start()/stop() in the test's thread
            self._error = err

    def start(self, timeout: float = 15.0, *, wait_ready: bool = True) -> ControllerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout

        def up() -> bool:
            return (
                self.controller.operator.ready if wait_ready else self.controller.loop is not None
            )

        while not up():
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("controller died at start-up") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"controller not ready after {timeout}s")
            time.sleep(0.02)
        return self

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run a coroutine on the controller's loop from the test's thread."""
        loop = self.controller.loop
        if loop is None:
            raise RuntimeError("controller is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"controller still running {timeout}s after stop")

    def __enter__(self) -> ControllerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
