"""The BGP announcer's public values: timing, restart reasons and the hooks it calls; used by
announcer.py and by the speaker (speaker/runner.py maps the hooks to metrics)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from lbctl.core.bgproutes import Statuses
from lbctl.core.model import PeerName

# Issue 10: a read-only command every 1 s; no ack within 2 s -> ExaBGP is hung, restart it.
HEALTH_EVERY = 1.0
HEALTH_TIMEOUT = 2.0
# Any other command: no ack within this -> ExaBGP is hung (acks come in ~3 ms here).
COMMAND_TIMEOUT = 2.0
# ExaBGP's API process (the relay) connects ~0.5 s after ExaBGP starts; bound on a slow machine.
START_TIMEOUT = 10.0
# Restart backoff: the first restart at once, then doubling up to the cap; reset after a
# process stayed up for STABLE seconds.
RESTART_FIRST, RESTART_CAP, STABLE = 0.0, 10.0, 30.0
# Prefixes per `announce attributes ... nlri` / `withdraw attributes ... nlri` command. ExaBGP
# runs a command as a generator, one step per prefix, at most 50 steps (Asynchronous.LIMIT) per
# turn of its reactor, and unless its peer has updates to send, a turn with a command unfinished
# sleeps like an idle one (speed / 100 s: 50 ms with process.ENV). With the session not up yet
# (a restarted ExaBGP being re-sent every route) a 500-prefix command took 0.57 s, 0.48 s of it
# asleep, and 10,000 prefixes 11.8 s; under 50 a command ends in the turn that read it: 1.65 s.
# Each command then also stays far below COMMAND_TIMEOUT on a loaded machine. With the session
# up, 40 and 500 came out the same within noise (bench/bgp.py, 10,000 to BIRD: p50 10.5 s
# against 11.0 s at load 6-11).
BATCH = 40
# A session not Established this long after its ExaBGP started gets one WARNING naming what to
# check (address, port, ASNs, TCP-MD5 password: a wrong password is silent on the wire).
SESSION_WARN = 5.0
TICK = 0.1  # s between passes of the announcer's loop when nothing wakes it


class RestartReason(enum.StrEnum):
    """Why an ExaBGP was restarted (the metric's label)."""

    EXITED = "Exited"  # the process died (killed, crashed)
    HUNG = "Hung"  # a command was not acknowledged in time
    NO_API = "NoAPI"  # its API process never connected
    START_FAILED = "StartFailed"  # it could not be spawned at all


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class BGPHooks:
    """What the announcer tells its owner, each a no-op by default. Called on the announcer's
    thread; keep them quick (metrics, a call_soon_threadsafe). No text passed here ever holds a
    password."""

    on_status: Callable[[Statuses], None] = _ignore  # any peer's status changed: all of them
    on_updates: Callable[[PeerName, int], None] = _ignore  # prefixes announced or withdrawn
    on_restart: Callable[[PeerName, RestartReason], None] = _ignore
    on_command_error: Callable[[PeerName, str], None] = _ignore  # the command (no secret)
    # A session came up (True) or went down (False, with why: ExaBGP's words or ours).
    on_session: Callable[[PeerName, bool, str], None] = _ignore
    # How many prefixes a peer now carries (acknowledged while Established; 0 when removed).
    on_prefixes: Callable[[PeerName, int], None] = _ignore
