"""The container runtime of the lab kubelet: a pod IP on the node's lo and one backend process
per pod, started in the node namespace and stopped by PID; used by the kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lbctl
from lbctl.lab import nsutil, plan
from lbctl.lab.backend import READY_LINE

log = logging.getLogger(__name__)
READY_TIMEOUT = 5.0  # a backend prints "ready" ~0.1 s after exec here; this is only a bound
STOP_GRACE = 2.0
PodKey = tuple[str, str]  # (namespace, name)


class PodStartError(RuntimeError):
    """A backend did not come up."""


@dataclass
class Backend:
    """One pod's process and address."""

    key: PodKey
    uid: str
    node: str
    netns: str
    ip: str
    ports: tuple[tuple[str, int], ...]
    proc: asyncio.subprocess.Process | None = None
    held: bool = False  # stopped on purpose: not restarted until released
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # one start at a time: the agent's pass and a test's start_backend may both find the
    # backend stopped; without it both exec a process and the first is left running
    starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class PodRunner:
    """Starts, watches and stops backends. `on_change` fires when a backend exits."""

    def __init__(
        self,
        *,
        record_pid: Callable[[int, str], None],
        forget_pid: Callable[[int], None],
        log_dir: Path,
        on_change: Callable[[], None],
    ) -> None:
        self._record_pid = record_pid
        self._forget_pid = forget_pid
        self._log_dir = log_dir
        self._on_change = on_change
        self.backends: dict[PodKey, Backend] = {}
        self._slots: dict[str, set[int]] = {}
        self._waiters: set[asyncio.Task[None]] = set()
        # every process started and not yet reaped, in or out of `backends`: a removal
        # cancelled half-way (a node's agent stopped) must not leave one for close() to miss
        self._live: set[asyncio.subprocess.Process] = set()

    def allocate_ip(self, node_index: int, node: str) -> str:
        used = self._slots.setdefault(node, set())
        for slot in range(1, plan.POD_SLOTS + 1):
            if slot not in used:
                used.add(slot)
                return str(plan.pod_address(node_index, slot))
        raise PodStartError(f"node {node} has no free pod address ({plan.POD_SLOTS} per node)")

    def _release_ip(self, backend: Backend) -> None:
        octet = int(backend.ip.rsplit(".", 1)[1])
        self._slots.get(backend.node, set()).discard(octet % 8)

    async def add(self, backend: Backend) -> None:
        """Put the pod IP on the node's lo and start the backend (unless held)."""
        self.backends[backend.key] = backend
        await asyncio.to_thread(
            nsutil.ip, "addr", "replace", f"{backend.ip}/32", "dev", "lo", netns=backend.netns
        )
        await self.start(backend.key)

    async def start(self, key: PodKey) -> None:
        backend = self.backends[key]
        backend.held = False
        async with backend.starting:
            if not backend.running:
                await self._exec(key, backend)

    async def _exec(self, key: PodKey, backend: Backend) -> None:
        backend.exited = asyncio.Event()
        argv = [
            "ip", "netns", "exec", backend.netns,
            sys.executable, "-m", "lbctl.lab.backend",
            "--node", backend.node, "--pod", key[1], "--namespace", key[0],
            *(arg for _, port in backend.ports for arg in ("--listen", f"{backend.ip}:{port}")),
        ]  # fmt: skip
        with (self._log_dir / f"pod-{key[0]}-{key[1]}.log").open("ab") as err_log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err_log,
                env={**os.environ, "PYTHONPATH": str(Path(lbctl.__file__).resolve().parents[1])},
                start_new_session=True,
            )
        backend.proc = proc
        self._live.add(proc)
        self._record_pid(proc.pid, f"pod:{key[0]}/{key[1]}")
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.decode().strip() != READY_LINE:
            await self._terminate(backend)
            raise PodStartError(f"backend of {key[0]}/{key[1]} on {backend.node} did not start")
        task = asyncio.create_task(self._watch(backend, proc))
        self._waiters.add(task)
        task.add_done_callback(self._waiters.discard)

    async def _watch(self, backend: Backend, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._reaped(proc)
        backend.exited.set()
        log.info("backend_exited pod=%s/%s code=%s", *backend.key, proc.returncode)
        self._on_change()

    def _reaped(self, proc: asyncio.subprocess.Process) -> None:
        self._live.discard(proc)
        self._forget_pid(proc.pid)

    async def _terminate(self, backend: Backend) -> None:
        if backend.proc is not None:
            await self._stop(backend.proc)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            self._reaped(proc)
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        self._reaped(proc)

    async def hold(self, key: PodKey) -> None:
        """Stop a pod's backend and keep it stopped (its endpoint turns not ready)."""
        backend = self.backends[key]
        backend.held = True
        await self._terminate(backend)

    async def remove(self, key: PodKey) -> None:
        """Stop a pod's backend and take its address off the node."""
        backend = self.backends.pop(key, None)
        if backend is None:
            return
        await self._terminate(backend)
        await asyncio.to_thread(
            nsutil.ip, "addr", "del", f"{backend.ip}/32", "dev", "lo",
            netns=backend.netns, check=False,
        )  # fmt: skip
        self._release_ip(backend)

    async def close(self) -> None:
        await asyncio.gather(*(self.remove(k) for k in list(self.backends)), return_exceptions=True)
        # processes out of `backends` whose stop was cancelled, reaped on this loop before it
        # closes (their transports would otherwise be closed by the GC on a closed loop)
        await asyncio.gather(*(self._stop(p) for p in list(self._live)), return_exceptions=True)
        for task in list(self._waiters):
            task.cancel()
        await asyncio.gather(*self._waiters, return_exceptions=True)
