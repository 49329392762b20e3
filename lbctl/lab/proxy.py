"""kube-proxy for one node namespace, userspace style: a local route per LoadBalancer VIP and a
TCP relay on VIP:port to ready backends; driven by the lab kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lbctl.lab import nsutil

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 2.0
RELAY_CHUNK = 65536


@dataclass(frozen=True)
class Frontend:
    """Where clients connect: a LoadBalancer ingress IP and a Service port (TCP)."""

    vip: str
    port: int


@dataclass(frozen=True)
class Upstream:
    """A ready backend: pod IP and target port, and the node it runs on."""

    ip: str
    port: int
    node: str


def local_route(vip: str) -> list[str]:
    """`ip route` arguments making `vip` local to the namespace without an address on any
    interface (so, with arp_ignore=1, the kernel never answers ARP for it)."""
    addr = ipaddress.ip_address(vip)
    return [
        "route",
        "replace",
        "local",
        f"{addr}/{addr.max_prefixlen}",
        "dev",
        "lo",
        "table",
        "local",
    ]


class NodeProxy:
    """All frontends of one node. `sync(desired)` is the only verb: it diffs and applies."""

    def __init__(self, netns: str, node: str) -> None:
        self.netns = netns
        self.node = node
        self._upstreams: dict[Frontend, tuple[Upstream, ...]] = {}
        self._servers: dict[Frontend, asyncio.Server] = {}
        self._routes: set[str] = set()
        self._rr = itertools.count()
        self._relays: set[asyncio.Task[None]] = set()

    @property
    def frontends(self) -> set[Frontend]:
        return set(self._servers)

    async def sync(self, desired: Mapping[Frontend, Sequence[Upstream]]) -> None:
        """Make routes and listeners match `desired`; upstream lists apply to new connections."""
        self._upstreams = {f: tuple(u) for f, u in desired.items()}
        vips = {f.vip for f in desired}
        for vip in sorted(vips - self._routes):
            await asyncio.to_thread(nsutil.ip, *local_route(vip), netns=self.netns)
            self._routes.add(vip)
        for frontend in set(self._servers) - set(desired):
            self._servers.pop(frontend).close()
        for frontend in set(desired) - set(self._servers):
            await self._listen(frontend)
        for vip in sorted(self._routes - vips):
            args = local_route(vip)
            args[1] = "del"
            await asyncio.to_thread(nsutil.ip, *args, netns=self.netns, check=False)
            self._routes.discard(vip)

    async def _listen(self, frontend: Frontend) -> None:
        try:
            sock = await asyncio.to_thread(
                nsutil.listen_tcp_in_netns, self.netns, frontend.vip, frontend.port, freebind=True
            )
        except nsutil.NetnsError as err:
            log.warning("proxy_listen_failed node=%s frontend=%s err=%s", self.node, frontend, err)
            return
        self._servers[frontend] = await asyncio.start_server(
            lambda r, w: self._track(self._relay(frontend, r, w)), sock=sock
        )

    async def close(self) -> None:
        """Close listeners, cut relays, remove the routes this proxy added."""
        for server in self._servers.values():
            server.close()
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.wait(self._relays, timeout=2.0)
        self._servers.clear()
        self._upstreams = {}
        await self.sync({})

    def _track(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task = asyncio.ensure_future(coro)
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    def choose(self, frontend: Frontend) -> list[Upstream]:
        """Upstreams to try for one connection, round-robin start, each at most once."""
        ups = self._upstreams.get(frontend, ())
        if not ups:
            return []
        start = next(self._rr) % len(ups)
        return [*ups[start:], *ups[:start]]

    async def _connect(self, upstream: Upstream) -> socket.socket:
        sock = await asyncio.to_thread(nsutil.tcp_socket_in_netns, self.netns, upstream.ip)
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(
                loop.sock_connect(sock, (upstream.ip, upstream.port)), CONNECT_TIMEOUT
            )
        except BaseException:
            sock.close()
            raise
        return sock

    async def _relay(
        self, frontend: Frontend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            for upstream in self.choose(frontend):
                try:
                    sock = await self._connect(upstream)
                except (OSError, TimeoutError) as err:
                    log.info("proxy_upstream_failed node=%s up=%s err=%r", self.node, upstream, err)
                    continue
                up_reader, up_writer = await asyncio.open_connection(sock=sock)
                try:
                    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                finally:
                    up_writer.close()
                return
            # No ready upstream (Local policy, none on this node): refuse by closing at once.
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side."""
    try:
        while chunk := await reader.read(RELAY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
