"""Command-line value types shared by lbctl-controller and lbctl-speaker (argparse `type=`)."""

from __future__ import annotations

import argparse


def object_ref(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` -> (namespace, name)."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAMESPACE/NAME")
    return namespace, name


def host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT`, `:PORT` for every address) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)
