"""One ExaBGP process holding one BGP session: its private directory (0700; the configuration
0600), the child process, the Unix socket its API relay connects to, and a reader thread that
sorts what ExaBGP says into acknowledgements (`done` / `error`) and JSON messages (session
state). Driven by announcer.py from the announcer's thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lbctl.core.bgproutes import Session
from speaker.announcers.bgp import messages, render
from speaker.announcers.bgp.api import START_TIMEOUT

log = logging.getLogger("lbctl.speaker.bgp")
RELAY = Path(__file__).with_name("relay.py")
STOP_TIMEOUT = 2.0
# ExaBGP's environment: run as root without dropping privileges (it binds nothing, but TCP-MD5
# needs CAP_NET_ADMIN on the socket), no listening socket, no per-route log lines.
ENV = {
    "exabgp_daemon_user": "root",
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_daemonize": "false",
    "exabgp_api_ack": "true",
    "exabgp_tcp_bind": "",
    "exabgp_log_destination": "stdout",
    "exabgp_log_processes": "false",
    "exabgp_log_statistics": "false",
    "exabgp_log_configuration": "false",
    # The reactor's idle poll() lasts speed/100 s (reactor/loop.py: _sleep_time); the default 1.0
    # wakes it 100 times a second, ~1.5 % of a core idle. 5.0 -> 20 wakeups a second. Commands
    # and the peer's socket are in the poll set, so they still wake it at once; only timers
    # (keepalives, every hold/3 >= 1 s) run up to 50 ms late.
    "exabgp_reactor_speed": "5.0",
}


def default_exabgp() -> list[str]:
    """ExaBGP next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("exabgp")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("exabgp")
    return [found] if found else [str(beside)]


class CommandTimeout(Exception):
    """ExaBGP did not acknowledge a command in time (or its API went away)."""


class ExaBGP:
    """One child ExaBGP and its API channel."""

    def __init__(
        self,
        session: Session,
        directory: Path,
        exabgp: Sequence[str],
        on_message: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self.session = session
        self.directory = directory
        self.exabgp = list(exabgp)
        self.on_message = on_message
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._conn: socket.socket | None = None
        self._acks: queue.Queue[bool | None] = queue.Queue()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._conn is not None

    def start(self) -> None:
        """Write the configuration, spawn ExaBGP, wait for its relay to connect. Raises OSError
        or CommandTimeout (the process is then stopped)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        sock_path = self.directory / "api.sock"
        conf = self.directory / "exabgp.conf"
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        relay = [sys.executable, str(RELAY), str(sock_path)]
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render.config(self.session, relay))
        conf.chmod(0o600)
        (self.directory / "run").mkdir(mode=0o700, exist_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(sock_path))
            server.listen(1)
            server.settimeout(START_TIMEOUT)
            env = {**os.environ, **ENV, "EXABGP_ROOT": str(self.directory)}
            with (self.directory / "exabgp.log").open("ab") as logfile:
                self.proc = subprocess.Popen(
                    [*self.exabgp, str(conf)], stdin=subprocess.DEVNULL, stdout=logfile,
                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )  # fmt: skip
            self.started = time.monotonic()
            try:
                conn, _ = server.accept()
            except TimeoutError:
                self.stop()
                raise CommandTimeout(f"no API connection within {START_TIMEOUT} s") from None
        finally:
            server.close()
        self._conn = conn
        self._acks = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(conn,), daemon=True,
                                        name=f"exabgp-{self.session.peer.name}")  # fmt: skip
        self._reader.start()

    def _read(self, conn: socket.socket) -> None:
        buffered = b""
        try:
            while chunk := conn.recv(65536):
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    self._line(line.strip())
        except OSError:
            pass
        self._acks.put(None)  # wakes a waiting command: the channel is gone

    def _line(self, line: bytes) -> None:
        parsed = messages.parse_line(line)
        if isinstance(parsed, messages.Ack):
            self._acks.put(parsed is messages.Ack.DONE)
        elif parsed is not None:
            self.on_message(parsed)
        # None is a command's output (e.g. `exabgp 5.0.15`): not needed

    def command(self, line: str, timeout: float) -> bool:
        """Send one command; True on `done`, False on `error`. Raises CommandTimeout."""
        render.check_line(line)
        conn = self._conn
        if conn is None:
            raise CommandTimeout("no API connection")
        with self._lock:
            try:
                conn.sendall(line.encode("ascii") + b"\n")
            except OSError as err:
                raise CommandTimeout(f"API connection lost: {err}") from None
            try:
                ack = self._acks.get(timeout=timeout)
            except queue.Empty:
                raise CommandTimeout(f"no acknowledgement within {timeout} s") from None
        if ack is None:
            raise CommandTimeout("API connection closed")
        return ack

    def stop(self, *, kill: bool = False) -> None:
        """Stop ExaBGP by its PID: SIGTERM (it closes its session with a NOTIFICATION) unless
        `kill`, SIGKILL after STOP_TIMEOUT; also a stopped (SIGSTOP) process."""
        self.signal_stop(kill=kill)
        self.reap(time.monotonic() + STOP_TIMEOUT)

    def signal_stop(self, *, kill: bool = False) -> None:
        """Close the API channel and signal ExaBGP (SIGCONT too: a stopped process must run to
        act on SIGTERM); does not wait."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)
            self._conn.close()
            self._conn = None
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)

    def reap(self, deadline: float) -> None:
        """Wait for ExaBGP to exit until `deadline` (time.monotonic()), then SIGKILL it."""
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)  # SIGKILL is not refused: this returns at once
