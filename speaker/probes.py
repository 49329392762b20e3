"""Liveness messages between speakers: the wire format (pure encode/decode) and the UDP endpoint
on the data-plane loop; used by speaker.dataplane.

One JSON object per datagram:
  {"v": 1, "t": "probe"|"ack"|"ireq"|"ires"|"handback", "seq": N, "r": REPORT,
   "target": NAME, "addr": IP, "ok": bool, "keys": [IP...]}
where REPORT is the sender's report as a JSON text of its own (a string inside the message):
  {"node": NAME, "fresh": bool, "leaving": bool, "macs": [...], "cannot": [IP...],
   "holding": {IP: epoch}}
A report changes rarely, so the sender encodes it once per change and the receiver parses each
distinct text once (report_text, parse_report): with a thousand groups a node's report is a few
kilobytes, and re-encoding and re-parsing it for every probe would cost most of the CPU.
A datagram that does not parse, or names an unknown version, is dropped and counted.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lbctl.core.liveness import Report
from lbctl.core.model import IPAddress, NodeName

VERSION = 1
MAX_DATAGRAM = 65000


class Kind(enum.StrEnum):
    PROBE = "probe"  # are you alive? carries the sender's report
    ACK = "ack"  # yes; carries the answerer's report
    INDIRECT = "ireq"  # please probe `target` at `addr` for me
    INDIRECT_RESULT = "ires"  # `target` answered me (`ok`) or not
    HANDBACK = "handback"  # the acting owner gives `keys` back to their rank-1 node


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    seq: int
    report: Report
    target: NodeName | None = None
    addr: IPAddress | None = None
    ok: bool = False
    keys: tuple[IPAddress, ...] = field(default=())


class WireError(ValueError):
    """A datagram that is not a liveness message of this version."""


def report_text(r: Report) -> str:
    """A report's JSON text (callers cache it per report)."""
    return json.dumps(
        {"node": r.node, "fresh": r.fresh, "leaving": r.leaving, "macs": list(r.macs),
         "cannot": sorted(map(str, r.cannot)),
         "holding": {str(k): e for k, e in r.holding.items()}},
        separators=(",", ":"),
    )  # fmt: skip


def encode(msg: Message, text: str | None = None) -> bytes:
    """The datagram for `msg`; `text` is report_text(msg.report) when the caller has it."""
    body: dict[str, Any] = {
        "v": VERSION, "t": msg.kind.value, "seq": msg.seq,
        "r": text if text is not None else report_text(msg.report),
    }  # fmt: skip
    if msg.target is not None:
        body["target"] = msg.target
    if msg.addr is not None:
        body["addr"] = str(msg.addr)
    if msg.kind is Kind.INDIRECT_RESULT:
        body["ok"] = msg.ok
    if msg.keys:
        body["keys"] = [str(k) for k in msg.keys]
    return json.dumps(body, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=1024)
def parse_report(text: str) -> Report:
    """The report in `text`, parsed once per distinct text (the same object each time, which
    the liveness state uses to skip an unchanged report)."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise WireError("a report is not a JSON object")
    return Report(
        node=NodeName(_text(raw["node"])),
        fresh=bool(raw["fresh"]),
        leaving=bool(raw.get("leaving", False)),
        macs=tuple(_text(m) for m in raw.get("macs", ())),
        cannot=frozenset(_ip(a) for a in raw.get("cannot", ())),
        holding={_ip(k): int(e) for k, e in raw.get("holding", {}).items()},
    )


def decode(data: bytes) -> Message:
    """The message in `data`; WireError for anything else (a stray or a newer speaker)."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != VERSION:
            raise WireError(f"not a version-{VERSION} liveness message")
        target = raw.get("target")
        addr = raw.get("addr")
        return Message(
            kind=Kind(raw["t"]),
            seq=int(raw["seq"]),
            report=parse_report(_str(raw["r"])),
            target=NodeName(_text(target)) if target is not None else None,
            addr=_ip(addr) if addr is not None else None,
            ok=bool(raw.get("ok", False)),
            keys=tuple(_ip(k) for k in raw.get("keys", ())),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise WireError(f"bad liveness message: {err}") from err


@functools.lru_cache(maxsize=65536)
def _ip(text: str) -> IPAddress:
    """Parsed once per distinct text: every probe repeats the same few addresses."""
    return ipaddress.ip_address(text)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise WireError("the report is not a JSON text")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or any(ord(c) < 32 for c in value):
        raise WireError(f"bad name {value!r}")
    return value


class Endpoint(asyncio.DatagramProtocol):
    """The speaker's UDP socket: hands each decoded message and its source to `on_message`."""

    def __init__(self, on_message: Callable[[Message, tuple[str, int]], None]) -> None:
        self.on_message = on_message
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            msg = decode(data)
        except WireError:
            self.dropped += 1
            return
        self.on_message(msg, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a dead peer: its silence is what the probes measure

    def send(self, msg: Message, addr: tuple[str, int], text: str | None = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(encode(msg, text), addr)
