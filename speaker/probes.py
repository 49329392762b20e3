"""Liveness messages between speakers: the wire format (pure encode/decode), which report each
peer already has (Reports); used by speaker.dataplane and by its UDP endpoint
(speaker.probesocket).

One datagram per message, binary, network byte order:
  header  version u8, kind u8, flags u8 (1: ok, 2: a report follows), seq u32,
          report u64 (the id of the sender's current report),
          seen u64 (the id of the receiver's report the sender holds; 0: none),
          node (the sender: u8 length + UTF-8), target (u8 length + UTF-8; 0: none),
          addr (u8 length 0/4/16 + bytes), keys (u16 count + addresses)
  report  (flag 2) the rest of the datagram: zlib of
          fresh u8, leaving u8, macs (u8 count + u8 length + ASCII each),
          cannot (addresses), holding (addresses, then one varint epoch per address)
  addresses  for IPv4, then IPv6: a varint count, the first address in full and each next one
          as the varint difference to the one before (sorted: a pool's addresses are close, so a
          thousand of them take a few kilobytes before zlib).
A report changes rarely and, with a thousand groups, takes kilobytes; a probe or an ack carries
it only while the receiver has not said (in `seen`) that it holds that version, so steady state
is 40-byte datagrams. The kernel's cost of a datagram grows with its size on the sender's side
(on a veth pair the sender's sendto runs the receiver's stack too): 4-kilobyte JSON reports
cost about 350 us of sendto each (docs/performance.md, "L2 speaker").
A datagram that does not parse, or names an unknown version, is dropped and counted.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import operator
import random
import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from lbctl.core.liveness_types import Report
from lbctl.core.model import IPAddress, NodeName

VERSION = 2
MAX_DATAGRAM = 65000
MAX_REPORT = 1 << 21  # bytes a report may inflate to (100,000 holdings take about 300 kB)
_HEADER = struct.Struct("!BBBIQQ")
_OK, _HAS_REPORT, _BEAT = 1, 2, 4


class Kind(enum.IntEnum):
    PROBE = 1  # are you alive?
    ACK = 2  # yes
    INDIRECT = 3  # please probe `target` at `addr` for me
    INDIRECT_RESULT = 4  # `target` answered me (`ok`) or not
    HANDBACK = 5  # the acting owner gives `keys` back to their rank-1 node


class Message(NamedTuple):
    """One liveness message (a NamedTuple: built for every datagram, and a frozen dataclass's
    constructor costs several times as much)."""

    kind: Kind
    seq: int
    node: NodeName  # the sender
    report_id: int  # the sender's current report
    seen: int = 0  # the receiver's report the sender holds (0: none)
    report: Report | None = None  # the sender's report, when the receiver may lack it
    target: NodeName | None = None
    addr: IPAddress | None = None
    ok: bool = False
    keys: tuple[IPAddress, ...] = ()
    body: bytes = b""  # as received: the report's encoded form (Reports parses it if new)
    # a PROBE that is a monitor's regular one (not an indirect check's or a leaving node's): a
    # receiver that probes the sender every interval itself need not ack it (its own probe
    # answers); a speaker that does not know the flag acks it as before
    beat: bool = False


class WireError(ValueError):
    """A datagram that is not a liveness message of this version."""


# -- encode ----------------------------------------------------------------------------------------


def encode(msg: Message, body: bytes | None = None) -> bytes:
    """The datagram for `msg`; `body` is report_body(msg.report) when the caller has it cached.
    WireError when it would not fit in one datagram."""
    if body is None and msg.report is not None:
        body = report_body(msg.report)
    flags = (_OK if msg.ok else 0) | (_HAS_REPORT if body is not None else 0)
    flags |= _BEAT if msg.beat else 0
    parts = [
        _HEADER.pack(VERSION, msg.kind, flags, msg.seq, msg.report_id, msg.seen),
        _name(msg.node),
        _name(msg.target or ""),
        _addr(msg.addr),
        struct.pack("!H", len(msg.keys)),
        *(_addr(k) for k in msg.keys),
    ]
    if body is not None:
        parts.append(body)
    data = b"".join(parts)
    if len(data) > MAX_DATAGRAM:
        raise WireError(f"a {len(data)}-byte message does not fit in a datagram")
    return data


def report_body(r: Report) -> bytes:
    """A report's encoded form (callers cache it per report; the node travels in the header).
    10,000 holdings: ~5 ms (a new one is made whenever what this node holds changed)."""
    keys = _ordered(r.holding)
    parts = [
        bytes((int(r.fresh), int(r.leaving), len(r.macs))),
        *(_name(m) for m in r.macs),
        _addresses(_ordered(r.cannot)),
        _addresses(keys),
        b"".join(map(_varint, map(r.holding.__getitem__, keys))),
    ]
    return zlib.compress(b"".join(parts))


def _ordered(ips: Iterable[IPAddress]) -> list[IPAddress]:
    """IPv4 then IPv6, each in address order."""
    return sorted(ips, key=lambda ip: (ip.version, int(ip)))


def _name(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise WireError(f"name {text[:40]!r}... is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _addr(ip: IPAddress | None) -> bytes:
    if ip is None:
        return b"\0"
    packed = ip.packed
    return bytes((len(packed),)) + packed


_SMALL = [bytes((n,)) for n in range(0x80)]  # most gaps and epochs: one byte, made once


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        raise WireError(f"{n} is negative")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _addresses(ordered: list[IPAddress]) -> bytes:
    """`ordered` (_ordered): a count per family, then the first in full and the rest as gaps."""
    out = []
    for version, width in ((4, 4), (6, 16)):
        values = [int(ip) for ip in ordered if ip.version == version]
        out.append(_varint(len(values)))
        if values:
            out.append(values[0].to_bytes(width, "big"))
            out += map(_varint, map(operator.sub, values[1:], values))
    return b"".join(out)


# -- decode ----------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data, self.at = data, at

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise WireError("truncated")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def name(self) -> str:
        return _text(self.take(self.byte()))

    def addr(self) -> IPAddress | None:
        size = self.byte()
        if size not in (0, 4, 16):
            raise WireError(f"an address of {size} bytes")
        return ipaddress.ip_address(self.take(size)) if size else None

    def varint(self) -> int:
        n, shift = 0, 0
        for _ in range(20):  # 140 bits: more than any address
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
        raise WireError("a varint longer than 20 bytes")

    def addresses(self) -> list[IPAddress]:
        out: list[IPAddress] = []
        for width, make in ((4, ipaddress.IPv4Address), (16, ipaddress.IPv6Address)):
            count = self.varint()
            if count > len(self.data) - self.at:  # each takes a byte at least
                raise WireError(f"{count} addresses in {len(self.data)} bytes")
            value = int.from_bytes(self.take(width), "big") if count else 0
            for i in range(count):
                value += self.varint() if i else 0
                out.append(make(value))
        return out


def decode(data: bytes) -> Message:
    """The message in `data` (its report left encoded in `body`, see Reports.received);
    WireError for anything else (a stray or an older speaker)."""
    try:
        if len(data) < _HEADER.size:
            raise WireError("shorter than a header")
        version, kind, flags, seq, report_id, seen = _HEADER.unpack_from(data)
        if version != VERSION:
            raise WireError(f"not a version-{VERSION} liveness message")
        reader = _Reader(data, _HEADER.size)
        node = reader.name()
        if not node:
            raise WireError("no sender")
        target = reader.name()
        addr = reader.addr()
        keys = tuple(_present(reader.addr()) for _ in range(struct.unpack("!H", reader.take(2))[0]))
        body = data[reader.at :]
        if bool(body) != bool(flags & _HAS_REPORT):
            raise WireError("a report flag without a report, or bytes without the flag")
        return Message(
            Kind(kind), seq, NodeName(node), report_id, seen, None,
            NodeName(target) if target else None, addr, bool(flags & _OK), keys, body,
            bool(flags & _BEAT),
        )  # fmt: skip
    except (TypeError, ValueError, UnicodeDecodeError, struct.error) as err:
        if isinstance(err, WireError):
            raise
        raise WireError(f"bad liveness message: {err}") from err


def with_report(msg: Message) -> Message:
    """`msg` with its report parsed (tests, and any caller that wants it whatever it costs)."""
    return msg._replace(report=parse_body(msg.node, msg.body)) if msg.body else msg


def parse_body(node: NodeName, body: bytes) -> Report:
    """The report `node` sent as `body` (report_body)."""
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(body, MAX_REPORT)
    except zlib.error as err:
        raise WireError(f"a report that does not inflate: {err}") from err
    if inflate.unconsumed_tail or not inflate.eof:
        raise WireError(f"a report longer than {MAX_REPORT} bytes, or cut short")
    reader = _Reader(raw)
    fresh, leaving, n_macs = reader.byte(), reader.byte(), reader.byte()
    macs = tuple(reader.name() for _ in range(n_macs))
    cannot = frozenset(reader.addresses())
    keys = reader.addresses()
    holding = {k: reader.varint() for k in keys}
    if reader.at != len(reader.data):
        raise WireError("trailing bytes after a report")
    return Report(node, bool(fresh), bool(leaving), macs, cannot, holding)


@functools.lru_cache(maxsize=4096)
def _text(raw: bytes) -> str:
    """A name, decoded once per distinct spelling (every message repeats a few node names)."""
    text = raw.decode()
    if not text.isprintable():
        raise WireError(f"bad name {text!r}")
    return text


def _present(ip: IPAddress | None) -> IPAddress:
    if ip is None:
        raise WireError("an empty address in keys")
    return ip


# -- which report each peer has ------------------------------------------------------------------


class Reports:
    """This node's report as sent (id, body) and the peers' as received, and which version of
    this node's report each peer said it holds: a message carries the report only while the
    receiver lacks it. A lost report is sent again, because the receiver keeps naming the
    old version; a restarted receiver names none."""

    def __init__(self) -> None:
        self.mine: Report | None = None
        self.mine_id = 0
        self.mine_body = b""
        self.theirs: dict[NodeName, tuple[int, Report]] = {}
        self.they_hold: dict[NodeName, int] = {}  # peer -> the id of my report it has

    def set_mine(self, report: Report) -> None:
        """A new report of this node (the caller decides when it changed)."""
        self.mine = report
        self.mine_id = random.getrandbits(63) | 1  # never 0, which says "none"
        self.mine_body = report_body(report)

    def received(self, msg: Message) -> Report | None:
        """Learn from `msg` which of my reports its sender has; its sender's report (the same
        object for the same version, parsed once), or None when the message names one this
        node lacks, or carries one that does not parse (WireError)."""
        self.they_hold[msg.node] = msg.seen
        known = self.theirs.get(msg.node)
        if known is not None and known[0] == msg.report_id:
            return known[1]
        if msg.report is None and not msg.body:
            return None
        report = msg.report if msg.report is not None else parse_body(msg.node, msg.body)
        self.theirs[msg.node] = (msg.report_id, report)
        return report

    def to(self, node: NodeName | None) -> tuple[int, int, bytes | None]:
        """(my report's id, the id of `node`'s report I hold, the body if it lacks mine)."""
        if node is None:
            return self.mine_id, 0, self.mine_body
        known = self.theirs.get(node)
        body = None if self.they_hold.get(node) == self.mine_id else self.mine_body
        return self.mine_id, known[0] if known is not None else 0, body

    def forget(self, keep: Mapping[NodeName, object]) -> None:
        """Drop what is kept of nodes no longer in `keep` (nodes that left the cluster)."""
        for table in (self.theirs, self.they_hold):
            for node in [n for n in table if n not in keep]:
                del table[node]
