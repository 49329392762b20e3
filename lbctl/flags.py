"""Command-line value types and logging shared by lbctl-controller and lbctl-speaker."""

from __future__ import annotations

import argparse
import logging
import sys


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


def setup_logging(level: str) -> None:
    """Log to stderr, one line per record. kopf logs every handler call at INFO (three lines
    per watch event in the speaker: 180,000 for 10,000 Services created); ours say what
    matters, so kopf's INFO lines show only at DEBUG."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLevelName(level)))
