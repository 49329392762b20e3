"""What every `lbctl` subcommand shares: exit codes and reading a PATH argument (`-` = stdin)."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK = 0  # the checked thing is fine (warnings allowed)
EXIT_INVALID = 1  # the checked thing is wrong: an invalid config, a YAML syntax error...
EXIT_USAGE = 2  # the command was wrong: bad arguments, a file that cannot be opened

STDIN = "-"
STDIN_NAME = "<stdin>"


def display_name(path: str) -> str:
    return STDIN_NAME if path == STDIN else path


def read_bytes(path: str) -> bytes:
    """The whole of PATH, or of standard input for `-`; raises OSError when it cannot be read."""
    if path == STDIN:
        buffer = getattr(sys.stdin, "buffer", None)
        return buffer.read() if buffer is not None else sys.stdin.read().encode()
    return Path(path).read_bytes()
