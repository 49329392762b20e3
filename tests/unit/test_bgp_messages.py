"""What ExaBGP writes to its API process, sorted: acks, session state, command output."""

from __future__ import annotations

import pytest

from speaker.announcers.bgp.messages import Ack, SessionState, parse_line, session_state

# As ExaBGP 5.0.15 writes them (reactor/api/response/json.py: up, connected, down).
UP = (
    b'{ "exabgp": "5.0.0", "time": 1764850000.1, "host" : "n1", "pid" : 42, "ppid" : 1, '
    b'"counter": 2, "type": "state", "neighbor": { "address": { "local": "192.0.2.11", '
    b'"peer": "192.0.2.1" }, "asn": { "local": 64501, "peer": 64500 } , "state": "up" } }'
)
DOWN = UP.replace(
    b'"state": "up"',
    b'"state": "down", "reason": "peer reset, message [closing connection] '
    b'error[the TCP connection was closed by the remote end]"',
)


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (b"done", Ack.DONE), (b"error", Ack.ERROR), (b"done\r", Ack.DONE), (b"  error ", Ack.ERROR),
        (b"exabgp 5.0.15", None), (b"", None), (b"{not json", None), (b"[1, 2]", None),
        (b"donex", None), (b"{}", {}),
    ],
    ids=["done", "error", "done-cr", "error-spaces", "version-output", "empty", "bad-json",
         "json-list", "not-quite-done", "json-object"],
)  # fmt: skip
def test_lines_are_sorted_into_acks_json_and_output(line: bytes, want: object) -> None:
    assert parse_line(line) == want


def test_up_message_means_established() -> None:
    message = parse_line(UP)
    assert isinstance(message, dict)
    state = session_state(message)
    assert state == SessionState("up")
    assert state.established and state.error() == ""


def test_down_message_carries_exabgp_reason() -> None:
    message = parse_line(DOWN)
    assert isinstance(message, dict)
    state = session_state(message)
    assert state is not None and not state.established
    assert state.error().startswith("session down: peer reset")


def test_connected_is_not_established() -> None:
    state = session_state({"type": "state", "neighbor": {"state": "connected"}})
    assert state is not None and not state.established and state.error() == "session connected"


@pytest.mark.parametrize(
    "message",
    [
        {"type": "update", "neighbor": {"state": "up"}},
        {"type": "state"},
        {"type": "state", "neighbor": "up"},
        {"type": "state", "neighbor": {"state": 1}},
        {"type": "state", "neighbor": {"state": ""}},
        {"type": "notification", "notification": "shutdown"},
    ],
    ids=[
        "update",
        "no-neighbor",
        "neighbor-not-object",
        "state-not-text",
        "state-empty",
        "shutdown",
    ],
)
def test_messages_without_a_session_state_are_ignored(message: dict[str, object]) -> None:
    assert session_state(message) is None
