"""What ExaBGP writes to its API process, sorted (pure): acknowledgements, session state from the
`neighbor-changes` JSON messages, and anything else; used by process.py and announcer.py."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Ack(enum.Enum):
    """ExaBGP's answer to one command (with `exabgp.api.ack` true, the default)."""

    DONE = "done"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session's state from one `{"type": "state", ...}` message: `up`, or not (`connected`
    while OPENs are exchanged, `down` with ExaBGP's reason)."""

    state: str
    reason: str = ""

    @property
    def established(self) -> bool:
        return self.state == "up"

    def error(self) -> str:
        """Why it is not up, for PeerStatus.error ("" when up). ExaBGP's own words only: they
        name a BGP event (e.g. `peer reset, message [closing connection] error[...]`), never
        the configuration, so no password can be in them."""
        if self.established:
            return ""
        return f"session {self.state}" + (f": {self.reason}" if self.reason else "")


def parse_line(line: bytes) -> Ack | Mapping[str, Any] | None:
    """One line from ExaBGP: an Ack, a JSON object, or None (a command's text output, e.g.
    `exabgp 5.0.15` before `version`'s `done`, or a line that is not valid JSON)."""
    line = line.strip()
    if line == b"done":
        return Ack.DONE
    if line == b"error":
        return Ack.ERROR
    if line.startswith(b"{"):
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None
    return None


def session_state(message: Mapping[str, Any]) -> SessionState | None:
    """The session state a JSON message reports, or None when it reports none."""
    if message.get("type") != "state":
        return None
    neighbor = message.get("neighbor")
    if not isinstance(neighbor, Mapping):
        return None
    state, reason = neighbor.get("state"), neighbor.get("reason")
    if not isinstance(state, str) or not state:
        return None
    return SessionState(state, reason if isinstance(reason, str) else "")
