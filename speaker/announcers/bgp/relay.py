"""The process ExaBGP runs for its API (`python -m speaker.announcers.bgp.relay SOCKET`): it
connects to the announcer's Unix socket and copies lines both ways — the announcer's commands to
its stdout (ExaBGP reads them), ExaBGP's acks and JSON messages from its stdin to the socket.

It exits when either side closes: on stdin EOF (ExaBGP stopped; else it would be orphaned) or
when the announcer closes the socket (ExaBGP then notices its API process is gone).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 65536


def relay(path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        print(f"relay: cannot connect to {path}: {err}", file=sys.stderr)
        return 1
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == stdin:
                data = os.read(stdin, CHUNK)
                if not data:
                    return 0
                sock.sendall(data)
            else:
                data = sock.recv(CHUNK)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view) :]


if __name__ == "__main__":
    raise SystemExit(relay(sys.argv[1]))
