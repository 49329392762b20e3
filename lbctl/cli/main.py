"""The `lbctl` command: parses arguments and dispatches to one module per subcommand.

Each subcommand module has `register(subparsers)`, which adds its parser and sets `handler`, a
function from the parsed arguments to the exit code. Exit codes: 0 success, 1 the checked thing
is wrong (an invalid config...), 2 the command itself was wrong (bad arguments, unreadable file).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from lbctl.cli import lab, validate
from lbctl.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
# Subcommands in the order `lbctl --help` lists them; status, explain, migrate and lab join here.
SUBCOMMANDS: tuple[Register, ...] = (validate.register, lab.register)

DESCRIPTION = """\
lbctl gives LoadBalancer Services on bare-metal Kubernetes an address from a pool and
announces it over layer 2 (ARP/NDP) or BGP. This command checks and explains its
configuration; it accepts lbctl's own format and MetalLB's legacy ConfigMap as they are."""

EPILOG = """\
exit codes: 0 success, 1 invalid input (e.g. a config with errors),
            2 bad arguments or a file that cannot be opened.
Run `lbctl COMMAND --help` for a command's options."""


def _version() -> str:
    try:
        return metadata.version("lbctl")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbctl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lbctl {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for register in SUBCOMMANDS:
        register(commands)
    return parser


def _exit_code(code: object) -> int:
    """SystemExit's code as an int: argparse exits 0 after --help, 2 on bad arguments."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_.code)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # `lbctl ... | head`: the reader left; silence the flush at exit (Python's documented way).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130  # 128 + SIGINT, as shells report it
