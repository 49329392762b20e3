"""The speaker's UDP socket for liveness probes (the wire format: speaker.probes), on the data
plane's loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from speaker.probes import MAX_DATAGRAM, Message, WireError, decode, encode


class Endpoint:
    """The speaker's UDP socket on the data-plane loop: hands each decoded message and its
    source to `on_message`. It reads every queued datagram on one wakeup (asyncio's datagram
    transport reads one per wakeup: a tick's nine acks cost nine trips through the loop) and
    sends with a plain sendto (a datagram that does not fit the socket buffer is dropped,
    which a peer counts as a lost probe)."""

    BATCH = 64  # datagrams read per wakeup at most, so a flood cannot starve the ticks

    def __init__(self, on_message: Callable[[Message, tuple[str, int]], None]) -> None:
        self.on_message = on_message
        self.sock: socket.socket | None = None
        self.dropped = 0  # datagrams that were no message
        self.unsent = 0  # messages too large, or refused by the kernel

    def open(self, loop: asyncio.AbstractEventLoop, bind: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(bind)
        except OSError as err:
            sock.close()
            raise OSError(err.errno, f"binding the probe socket to {bind}: {err}") from err
        self.sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.sock is not None:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        sock = self.sock
        for _ in range(self.BATCH):
            if sock is None:
                return
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM + 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable from a dead peer: its silence is the signal
                continue
            try:
                msg = decode(data)
            except WireError:
                self.dropped += 1
                continue
            self.on_message(msg, (str(addr[0]), int(addr[1])))
            sock = self.sock  # on_message may have closed it

    def send(self, msg: Message, addr: tuple[str, int], body: bytes | None = None) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(encode(msg, body), addr)
        except (WireError, OSError):  # too large; a full buffer; no route to a dead peer
            self.unsent += 1
