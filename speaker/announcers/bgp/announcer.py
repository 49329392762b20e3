"""The BGP announcer: takes this node's sessions (`configure`) and the whole desired set of routes
(`sync`), and makes one supervised ExaBGP per peer carry exactly those, from its own thread.

- One ExaBGP per peer: adding, changing or removing a peer starts or stops that one process, so
  sessions whose Session value did not change are never disturbed; a dead or hung ExaBGP takes
  down only its own session.
- The diff: per peer, what ExaBGP acknowledged (`acked`) against what is desired; withdrawals
  first, then announcements grouped by attributes, BATCH prefixes per command. A changed
  attribute is a re-announcement (it replaces the path).
- Supervision: `version` every HEALTH_EVERY seconds; HEALTH_TIMEOUT without any ack (or any
  command's COMMAND_TIMEOUT), or the process gone, and ExaBGP is killed by its PID and restarted
  (the first restart at once, then backing off), and every route is announced again. A session
  that drops and returns is re-sent by ExaBGP itself from its adj-rib-out.
- Status: per peer, Established (from ExaBGP's neighbor-changes JSON), the prefixes it
  acknowledged while Established, since when, and why it is down; reported through the hooks
  whenever it changes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbctl.core.bgproutes import Desired, IPNetwork, PeerStatus, RouteAttrs, Session, Statuses
from lbctl.core.model import PeerName
from speaker.announcers.bgp import messages, render
from speaker.announcers.bgp.api import (
    COMMAND_TIMEOUT,
    HEALTH_EVERY,
    HEALTH_TIMEOUT,
    RESTART_CAP,
    RESTART_FIRST,
    SESSION_WARN,
    STABLE,
    TICK,
    BGPHooks,
    RestartReason,
)
from speaker.announcers.bgp.process import CommandTimeout, ExaBGP, default_exabgp

log = logging.getLogger("lbctl.speaker.bgp")
LOG_CONVERGED_AT = 100  # prefixes withdrawn and announced in one pass that get a log line


@dataclass
class _Peer:
    name: PeerName
    session: Session
    directory: Path
    proc: ExaBGP | None = None
    acked: dict[IPNetwork, RouteAttrs] = field(default_factory=dict)
    established: bool = False
    since: float = field(default_factory=time.monotonic)
    error: str = ""
    next_start: float = 0.0
    backoff: float = RESTART_FIRST
    last_health: float = 0.0  # when the last health command was sent
    last_ack: float = 0.0  # when ExaBGP last acknowledged anything
    restarts: int = 0
    warned: bool = False  # the not-established warning was logged for this process
    version: int = 0  # bumped on every change of state or of acked
    converged: object = None  # the desired mapping last fully carried out (by identity)


class BGPAnnouncer:
    """Sessions and routes of one node, each peer's on its own ExaBGP."""

    def __init__(
        self,
        run_dir: Path,
        *,
        hooks: BGPHooks | None = None,
        exabgp: Sequence[str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.hooks = hooks or BGPHooks()
        self.exabgp = list(exabgp) if exabgp else default_exabgp()
        self._sessions: dict[PeerName, Session] = {}
        self._desired: Desired = {}
        self._peers: dict[PeerName, _Peer] = {}
        self._wake = threading.Condition()
        self._pending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._reported: dict[PeerName, PeerStatus] = {}
        self._reported_versions: dict[PeerName, int] = {}
        self._status_lock = threading.Lock()

    # -- the owner's side (any thread; returns at once) -------------------------------------------

    def start(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        self._thread = threading.Thread(target=self._run, name="bgp-announcer", daemon=True)
        self._thread.start()

    def configure(self, sessions: Mapping[PeerName, Session]) -> None:
        with self._wake:
            if dict(sessions) != self._sessions:
                self._sessions = dict(sessions)
                self._pending = True
                self._wake.notify()

    def sync(self, desired: Desired) -> None:
        with self._wake:
            self._desired = desired
            self._pending = True
            self._wake.notify()

    def statuses(self) -> Statuses:
        with self._status_lock:
            return dict(self._reported)

    def pids(self) -> dict[PeerName, int]:
        """Each peer's ExaBGP PID (for tests and the bench)."""
        return {n: p.proc.pid for n, p in self._peers.items() if p.proc and p.proc.pid}

    def close(self, timeout: float = 5.0) -> None:
        """Stop every ExaBGP by its PID, within `timeout` in all: SIGTERM to each at once (each
        closes its session with a NOTIFICATION, so the routers withdraw its routes at once, not
        after the hold time), SIGKILL to any still running at the deadline."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            # The loop checks _stopping between commands; one command waits at most
            # COMMAND_TIMEOUT, so half the budget is enough to see it stop.
            self._thread.join(max(0.0, timeout / 2))
        procs = [p.proc for p in list(self._peers.values()) if p.proc is not None]
        for proc in procs:
            proc.signal_stop()
        for proc in procs:
            proc.reap(deadline)

    # -- the announcer's thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._pending and not self._stopping:
                    self._wake.wait(TICK)
                if self._stopping:
                    return
                self._pending = False
                sessions, desired = self._sessions, self._desired
            try:
                self._pass(sessions, desired)
            except Exception:  # the loop boundary: log and go on
                log.exception("bgp_announcer_pass_failed")

    def _pass(self, sessions: Mapping[PeerName, Session], desired: Desired) -> None:
        for name in list(self._peers):
            peer = self._peers[name]
            if sessions.get(name) != peer.session:
                log.info("bgp_session_removed peer=%s", name)
                if peer.proc is not None:
                    peer.proc.stop()
                del self._peers[name]
        for name, session in sessions.items():
            if name not in self._peers:
                self._peers[name] = _Peer(name, session, self.run_dir / _dirname(name))
        now = time.monotonic()
        for peer in self._peers.values():
            if self._stopping:
                return
            self._supervise(peer, now)
            want = desired.get(peer.name, _NOTHING)
            alive = peer.proc is not None and peer.proc.alive()
            if alive and want is not peer.converged and self._converge(peer, want):
                peer.converged = want
        self._report()

    def _supervise(self, peer: _Peer, now: float) -> None:
        proc = peer.proc
        if proc is not None and not proc.alive():
            self._restart(peer, RestartReason.EXITED, "ExaBGP exited")
            proc = None
        if proc is None:
            if now >= peer.next_start:
                self._spawn(peer)
            return
        if not peer.established and not peer.warned and now - proc.started >= SESSION_WARN:
            peer.warned = True
            address = peer.session.peer.address
            error = (f"not Established {SESSION_WARN:.0f} s after ExaBGP started: check the "
                     "peer's address, port, ASNs and TCP-MD5 password")  # fmt: skip
            log.warning("bgp_session_not_established peer=%s address=%s: %s", peer.name,
                        address, error)  # fmt: skip
            self._set_state(peer, established=False, error=error)
        if now - peer.last_health >= HEALTH_EVERY:
            peer.last_health = now
            # Hung = HEALTH_TIMEOUT since the last ack, not since this command: a process that
            # stopped just after an ack is restarted HEALTH_TIMEOUT later, whatever the phase.
            self._command(peer, render.HEALTH, max(0.05, peer.last_ack + HEALTH_TIMEOUT - now))
            if now - proc.started >= STABLE:
                peer.backoff = RESTART_FIRST

    def _spawn(self, peer: _Peer) -> None:
        if self._stopping:
            return  # close() is stopping every process: start none
        proc = ExaBGP(peer.session, peer.directory, self.exabgp,
                      lambda message: self._message(peer, message))  # fmt: skip
        peer.acked = {}
        peer.converged = None
        peer.version += 1
        peer.proc = proc  # its PID is known from the spawn on, while the relay connects
        try:
            proc.start()
        except (OSError, CommandTimeout, render.RenderError) as err:
            if proc.proc is None:
                peer.proc = None
            reason = RestartReason.NO_API if isinstance(err, CommandTimeout) else None
            self._restart(peer, reason or RestartReason.START_FAILED, f"start failed: {err}")
            return
        peer.warned = False
        peer.last_health = peer.last_ack = time.monotonic()
        log.info("exabgp_started peer=%s pid=%s", peer.name, proc.pid)

    def _restart(self, peer: _Peer, reason: RestartReason, error: str) -> None:
        """Kill the process (if any), count the restart, schedule the next start."""
        if peer.proc is not None:
            peer.proc.stop(kill=True)
            peer.proc = None
        peer.acked = {}
        peer.converged = None
        peer.version += 1
        self._set_state(peer, established=False, error=error)
        peer.restarts += 1
        peer.next_start = time.monotonic() + peer.backoff
        peer.backoff = min(RESTART_CAP, max(0.5, peer.backoff * 2))
        log.warning("exabgp_restart peer=%s reason=%s error=%s", peer.name, reason, error)
        self.hooks.on_restart(peer.name, reason)

    def _command(self, peer: _Peer, line: str, timeout: float = COMMAND_TIMEOUT) -> bool:
        proc = peer.proc
        if proc is None:
            return False
        try:
            ok = proc.command(line, timeout)
            peer.last_ack = time.monotonic()
        except CommandTimeout as err:
            self._restart(peer, RestartReason.HUNG, f"ExaBGP did not answer: {err}")
            return False
        if not ok:
            words = line.split(" nlri ", 1)[0]
            log.error("exabgp_command_refused peer=%s command=%s", peer.name, words)
            self.hooks.on_command_error(peer.name, words)
        return ok

    def _converge(self, peer: _Peer, want: Mapping[IPNetwork, RouteAttrs]) -> bool:
        """Withdraw what is no longer wanted, announce what is new or changed; True when done
        (a refused command's prefixes stay unsent until the desired set changes), False when
        ExaBGP did not answer (it is being restarted)."""
        family = peer.session.peer.address.version
        if any(net.version != family for net in want):
            # next-hop self is an address of the session's family: the planner sends each
            # prefix to peers of its own family only; anything else is skipped, never sent.
            log.warning("bgp_prefix_family_skipped peer=%s family=ipv%d", peer.name, family)
            want = {net: attrs for net, attrs in want.items() if net.version == family}
        want = self._renderable(peer, want)
        started = time.monotonic()
        gone = [net for net in peer.acked if net not in want]
        for line, nets in render.withdrawals(gone):
            if not self._command(peer, line):
                if peer.proc is None:
                    return False
                continue
            for net in nets:
                del peer.acked[net]
            self._updated(peer, len(nets))
        changed = {net: a for net, a in want.items() if peer.acked.get(net) != a}
        for line, nets in render.announcements(changed):
            if not self._command(peer, line):
                if peer.proc is None:
                    return False
                continue
            for net in nets:
                peer.acked[net] = changed[net]
            self._updated(peer, len(nets))
        if len(gone) + len(changed) >= LOG_CONVERGED_AT:
            log.info("bgp_converged peer=%s withdrawn=%d announced=%d seconds=%.2f", peer.name,
                     len(gone), len(changed), time.monotonic() - started)  # fmt: skip
        return True

    def _renderable(
        self, peer: _Peer, want: Mapping[IPNetwork, RouteAttrs]
    ) -> Mapping[IPNetwork, RouteAttrs]:
        """`want` without the routes whose attributes cannot be written (logged, never sent)."""
        bad = set()
        for attrs in set(want.values()):
            try:
                render.attributes(attrs)
            except render.RenderError as err:
                bad.add(attrs)
                log.error("bgp_route_attributes_refused peer=%s error=%s", peer.name, err)
                self.hooks.on_command_error(peer.name, str(err))
        return {net: a for net, a in want.items() if a not in bad} if bad else want

    def _updated(self, peer: _Peer, prefixes: int) -> None:
        peer.version += 1
        self.hooks.on_updates(peer.name, prefixes)

    # -- session state ----------------------------------------------------------------------------

    def _message(self, peer: _Peer, message: Mapping[str, Any]) -> None:
        """A JSON message from ExaBGP (reader thread): session state changes."""
        state = messages.session_state(message)
        if state is None:
            return
        with self._wake:
            self._set_state(peer, established=state.established, error=state.error())
            self._pending = True
            self._wake.notify()

    def _set_state(self, peer: _Peer, *, established: bool, error: str) -> None:
        if established != peer.established or error != peer.error:
            peer.version += 1
        if established != peer.established:
            peer.since = time.monotonic()
            log.info("bgp_session peer=%s established=%s %s", peer.name, established, error)
            self.hooks.on_session(peer.name, established, error)
        peer.established = established
        peer.error = error

    def _report(self) -> None:
        versions = {name: p.version for name, p in self._peers.items()}
        if versions == self._reported_versions:
            return
        self._reported_versions = versions
        statuses = {
            name: PeerStatus(
                established=p.established,
                sent=frozenset(p.acked) if p.established else frozenset(),
                since=p.since,
                error=p.error,
            )
            for name, p in self._peers.items()
        }
        with self._status_lock:
            if statuses == self._reported:
                return
            before, self._reported = self._reported, statuses
        for name, status in statuses.items():
            if name not in before or len(before[name].sent) != len(status.sent):
                self.hooks.on_prefixes(name, len(status.sent))
        for name in before.keys() - statuses.keys():
            self.hooks.on_prefixes(name, 0)  # a removed peer carries nothing
        self.hooks.on_status(statuses)


_NOTHING: Mapping[IPNetwork, RouteAttrs] = {}


def _dirname(name: PeerName) -> str:
    """A directory name for a peer: short (the socket path must fit 108 bytes) and safe."""
    return "peer-" + hashlib.sha256(name.encode()).hexdigest()[:12]
