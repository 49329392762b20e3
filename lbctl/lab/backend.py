"""A pod's stand-in process: a tiny TCP/HTTP server saying which node and pod answered; started
by the lab kubelet with `ip netns exec NODE python -m lbctl.lab.backend ...`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

READY_LINE = "ready"
FIRST_BYTES_WAIT = 0.1  # a raw-TCP client that sends nothing gets the plain answer after this
PARENT_POLL = 0.5  # exit once the kubelet that started us is gone (no orphan backends)
HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ", b"OPTIONS ")


@dataclass(frozen=True)
class Identity:
    node: str
    pod: str
    namespace: str

    def answer(self, local: tuple[str, int], peer: tuple[str, int]) -> dict[str, str | int]:
        return {
            "node": self.node,
            "pod": self.pod,
            "namespace": self.namespace,
            "ip": local[0],
            "port": local[1],
            "client": f"{peer[0]}:{peer[1]}",
        }


def plain_answer(fields: dict[str, str | int]) -> bytes:
    """`node=node-1 pod=web-x ...` on one line: easy to read from a raw socket."""
    return (" ".join(f"{k}={v}" for k, v in fields.items()) + "\n").encode()


def http_answer(fields: dict[str, str | int], head_only: bool) -> bytes:
    body = json.dumps(fields, sort_keys=True).encode() + b"\n"
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"X-Lab-Node: {fields['node']}\r\nX-Lab-Pod: {fields['pod']}\r\n\r\n"
    ).encode()
    return head if head_only else head + body


async def serve_one(
    ident: Identity, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        try:
            first = await asyncio.wait_for(reader.read(4096), FIRST_BYTES_WAIT)
        except TimeoutError:
            first = b""
        local = writer.get_extra_info("sockname")[:2]
        peer = writer.get_extra_info("peername")[:2]
        fields = ident.answer(local, peer)
        if first.startswith(HTTP_METHODS):
            writer.write(http_answer(fields, first.startswith(b"HEAD ")))
        else:
            writer.write(plain_answer(fields))
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL)


async def main_async(ident: Identity, listens: Sequence[tuple[str, int]]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers = [
        await asyncio.start_server(lambda r, w: serve_one(ident, r, w), host, port)
        for host, port in listens
    ]
    print(READY_LINE, flush=True)
    parent = asyncio.create_task(watch_parent(os.getppid()))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({parent, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (parent, stopper):
        task.cancel()
    for server in servers:
        server.close()


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbctl.lab.backend", description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument(
        "--listen", action="append", required=True, type=parse_listen, help="HOST:PORT"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(main_async(Identity(args.node, args.pod, args.namespace), args.listen))
    except OSError as err:
        print(f"backend {args.pod}: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
