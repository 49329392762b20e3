"""The API inside every node namespace: a TCP relay from 127.0.0.1:6443 there to the control
plane on the host's loopback; run by the bed as its own process (`python -m lbctl.lab.relay`).

TLS passes through untouched (the serving certificate names 127.0.0.1), so each client keeps its
own identity. A process of its own, not a thread of the test, so a busy test process never
slows the nodes' API traffic. A node cut off from the API is an nftables rule inside that node's
namespace; the relay knows nothing of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

from lbctl.lab import nsutil

NODE_API_PORT = 6443  # every node namespace has its own loopback, so one port serves all
READY_LINE = "relay ready"
CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _relay(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: tuple[str, int]
) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*upstream), 5.0)
    except (OSError, TimeoutError):
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
    finally:
        for w in (client_w, up_w):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def serve(netns_list: list[str], upstream: tuple[str, int], port: int) -> None:
    """Listen in each namespace; relay every connection to `upstream`; run until cancelled."""
    servers = []
    for netns in netns_list:
        sock = nsutil.listen_tcp_in_netns(netns, "127.0.0.1", port)
        servers.append(
            await asyncio.start_server(lambda r, w: _relay(r, w, upstream), sock=sock, limit=CHUNK)
        )
    print(READY_LINE, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the API server")
    parser.add_argument("--port", type=int, default=NODE_API_PORT)
    parser.add_argument("netns", nargs="+", help="namespaces to listen in")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    socket.inet_aton(host)  # IPv4 loopback only: a typo fails here, not per connection
    try:
        asyncio.run(serve(args.netns, (host, int(port)), args.port))
    except nsutil.NetnsError as err:
        print(f"relay: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
