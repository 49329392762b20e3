"""Listening sockets per source, closable and reopenable in their network namespace; used by the
fault proxy to serve sources and to refuse connections during an
injected outage."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import ssl
from dataclasses import dataclass, field

from aiohttp import web

SIOCGSKNS = 0x894C  # linux/sockios.h: get a socket's network namespace as an fd
CLONE_NEWNET = 0x40000000  # linux/sched.h (os.setns exists only from Python 3.12)
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Listener:
    """One listening address of a source; `netns_fd` lets it be re-created after a refusal."""

    source: str
    family: int
    address: tuple[str, int]
    netns_fd: int
    sock: socket.socket | None
    site: web.SockSite | None = field(default=None)


def adopt(sock: socket.socket, source: str) -> Listener:
    """Remember where `sock` listens (address and network namespace)."""
    netns_fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    sock.setblocking(False)
    return Listener(source, sock.family, sock.getsockname()[:2], netns_fd, sock)


def listen_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def reopen(listener: Listener) -> socket.socket:
    """Bind the same address again, inside the listener's network namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(listener.netns_fd)
        try:
            sock = socket.socket(listener.family, socket.SOCK_STREAM)
        finally:
            _setns(own)
    finally:
        os.close(own)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listener.address)
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start(
    listener: Listener, runner: web.AppRunner, ssl_context: ssl.SSLContext | None = None
) -> None:
    if listener.sock is None:
        listener.sock = reopen(listener)
    listener.site = web.SockSite(runner, listener.sock, ssl_context=ssl_context)
    await listener.site.start()


async def stop(listener: Listener, runner: web.AppRunner) -> None:
    """Close the listening socket (new connections refused) and abort open connections."""
    if listener.site is not None:
        await listener.site.stop()
        listener.site = None
    if listener.sock is not None:
        with contextlib.suppress(OSError):
            listener.sock.close()
        listener.sock = None
    server = runner.server
    if server is not None:
        for conn in server.connections:
            if conn.transport is not None:
                conn.transport.abort()


def release(listener: Listener) -> None:
    with contextlib.suppress(OSError):
        os.close(listener.netns_fd)
