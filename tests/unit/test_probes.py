"""The liveness wire format (speaker.probes): messages survive encode/decode, a report travels
only while its receiver lacks that version, and anything else on the port is dropped."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.liveness_types import Report
from lbctl.core.model import IPAddress, NodeName
from speaker.probes import (
    MAX_DATAGRAM,
    Kind,
    Message,
    Reports,
    WireError,
    decode,
    encode,
    parse_body,
    report_body,
    with_report,
)

N1, N2 = NodeName("node-1"), NodeName("node-2")
V4 = ipaddress.ip_address("192.0.2.200")
V6 = ipaddress.ip_address("2001:db8::7")


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def many(n: int, step: int = 7) -> dict[IPAddress, int]:
    base = int(ip("2001:db8:b::"))
    return {ipaddress.IPv6Address(base + i * step): 1 + i % 3 for i in range(n)}


REPORT = Report(
    N1,
    fresh=True,
    leaving=False,
    macs=("02:00:00:00:00:01", "02:00:00:00:00:02"),
    cannot=frozenset({V6, ip("192.0.2.9")}),
    holding={V4: 3, V6: 1, ip("198.51.100.1"): 7},
)


@pytest.mark.parametrize(
    "msg",
    [
        Message(Kind.PROBE, 1, N1, 5, 0, REPORT),
        Message(Kind.ACK, 2**31 - 1, N1, 2**63 - 1, 9),
        Message(Kind.INDIRECT, 3, N1, 5, 6, target=N2, addr=V6),
        Message(Kind.INDIRECT_RESULT, 4, N1, 5, 6, REPORT, target=N2, ok=True),
        Message(Kind.HANDBACK, 5, N1, 5, 6, keys=(V4, V6)),
        Message(Kind.PROBE, 6, N1, 5, 0, Report(N1, fresh=False, leaving=True)),
    ],
    ids=["probe-with-report", "ack-header-only", "indirect", "indirect-result", "handback",
         "empty-leaving-report"],
)  # fmt: skip
def test_a_message_decodes_to_what_was_encoded(msg: Message) -> None:
    assert with_report(decode(encode(msg)))._replace(body=b"") == msg


def test_a_message_without_its_report_is_a_small_datagram() -> None:
    assert len(encode(Message(Kind.ACK, 1, N1, 5, 6))) < 48


def test_a_thousand_holdings_fit_in_a_few_kilobytes() -> None:
    holding = many(1000)
    body = report_body(Report(N1, fresh=True, holding=holding))
    assert len(body) < 4096
    assert parse_body(N1, body).holding == holding


def test_ten_thousand_scattered_holdings_fit_in_one_datagram() -> None:
    holding = many(10_000, step=1009)
    data = encode(Message(Kind.ACK, 1, N1, 5, 6, Report(N1, fresh=True, holding=holding)))
    assert len(data) < MAX_DATAGRAM
    report = with_report(decode(data)).report
    assert report is not None and report.holding == holding


@pytest.mark.parametrize(
    "data",
    [b"", b"{}", b'{"v": 1, "t": "probe"}', bytes(40), b"\x01" + bytes(30),
     encode(Message(Kind.ACK, 1, N1, 5, 6))[:-3],
     encode(Message(Kind.PROBE, 1, N1, 5, 6, REPORT))[:-1]],
    ids=["empty", "json", "version-1-json", "zeros", "version-1", "cut-header", "cut-report"],
)  # fmt: skip
def test_a_datagram_that_is_no_message_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        with_report(decode(data))


@given(st.binary(max_size=200))
def test_decode_raises_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        with_report(decode(data))


@given(st.binary(min_size=1, max_size=60))
def test_a_corrupted_message_is_a_wire_error_or_a_message(noise: bytes) -> None:
    good = encode(Message(Kind.PROBE, 1, N1, 5, 6, REPORT))
    cut = len(noise) % len(good)
    with contextlib.suppress(WireError):
        with_report(decode(good[:cut] + noise + good[cut + len(noise) :]))


def test_a_name_with_a_control_character_is_refused() -> None:
    with pytest.raises(WireError):
        decode(encode(Message(Kind.PROBE, 1, NodeName("a\nb"), 5, 6)))


# -- Reports: who has which version ------------------------------------------------------------


def exchange(sender: Reports, me: NodeName, receiver: Reports, to: NodeName) -> Report | None:
    """`sender` (node `me`) sends one message to `receiver` (node `to`); what it received."""
    report_id, seen, body = sender.to(to)
    report = sender.mine if body is not None else None
    assert sender.mine is not None
    msg = decode(encode(Message(Kind.PROBE, 1, me, report_id, seen, report), body))
    return receiver.received(msg)


def pair() -> tuple[Reports, Reports]:
    a, b = Reports(), Reports()
    a.set_mine(Report(N1, fresh=True, holding={V4: 1}))
    b.set_mine(Report(N2, fresh=True, holding={V6: 1}))
    return a, b


def test_a_report_travels_until_the_receiver_says_it_has_it() -> None:
    a, b = pair()
    assert a.to(N2)[2] is not None
    assert exchange(a, N1, b, N2) == a.mine
    assert a.to(N2)[2] is not None  # b has not said so yet
    assert exchange(b, N2, a, N1) == b.mine
    assert a.to(N2)[2] is None and b.to(N1)[2] is not None
    assert exchange(a, N1, b, N2) is b.theirs[N1][1]  # the same object: liveness skips it
    assert exchange(a, N1, b, N2) is b.theirs[N1][1]
    assert b.to(N1)[2] is None


def test_a_changed_report_travels_again() -> None:
    a, b = pair()
    for _ in range(2):
        exchange(a, N1, b, N2)
        exchange(b, N2, a, N1)
    a.set_mine(Report(N1, fresh=False, holding={}))
    assert a.to(N2)[2] is not None
    assert exchange(a, N1, b, N2) == Report(N1, fresh=False, holding={})


def test_a_lost_report_is_sent_again() -> None:
    a, b = pair()
    a.to(N2)  # this message, with the report, is lost
    exchange(b, N2, a, N1)  # b says it holds no report of a's
    assert a.to(N2)[2] is not None


def test_a_restarted_receiver_gets_the_report_after_one_message() -> None:
    a, b = pair()
    for _ in range(2):
        exchange(a, N1, b, N2)
        exchange(b, N2, a, N1)
    fresh_b = Reports()
    fresh_b.set_mine(Report(N2, fresh=True))
    assert exchange(a, N1, fresh_b, N2) is None  # a version it lacks: no report this time
    exchange(fresh_b, N2, a, N1)
    assert exchange(a, N1, fresh_b, N2) == a.mine


def test_a_report_resent_before_the_receiver_said_so_is_parsed_once() -> None:
    a, b = pair()
    first = exchange(a, N1, b, N2)
    assert a.to(N2)[2] is not None  # b has not answered: the report travels again
    assert exchange(a, N1, b, N2) is first


def test_a_report_that_does_not_parse_is_a_wire_error() -> None:
    a = Reports()
    msg = Message(Kind.PROBE, 1, N1, 5, 0, body=b"not zlib")
    with pytest.raises(WireError):
        a.received(msg)


def test_nodes_that_left_are_forgotten() -> None:
    a, b = pair()
    exchange(b, N2, a, N1)
    a.forget({N1: V4})
    assert a.theirs == {} and a.they_hold == {}
