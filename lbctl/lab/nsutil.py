"""Network-namespace primitives (setns on a thread, sockets, `ip` wrappers); used by the lab."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IP_FREEBIND = 15  # linux/in.h; lets a proxy bind a VIP before its local route exists
DEFAULT_TIMEOUT = 10.0
SIOCGIFHWADDR = 0x8927


class NetnsError(RuntimeError):
    """A namespace operation failed; the message says what was being done."""


def netns_path(netns: str) -> Path:
    return NETNS_DIR / netns


def netns_exists(netns: str) -> bool:
    return netns_path(netns).exists()


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
    else:  # Python 3.11
        from pyroute2 import netns as pr_netns

        pr_netns.setns(fd)


def run_in_netns(netns: str, fn: Callable[[], T], timeout: float = DEFAULT_TIMEOUT) -> T:
    """Call `fn` on a short-lived thread that has entered `netns`; return its result.

    Only that thread changes namespace, and it goes back before ending, so the caller's threads
    never move. Sockets created inside keep their namespace for life.
    """
    box: dict[str, object] = {}

    def body() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(netns_path(netns), os.O_RDONLY)
            except FileNotFoundError:
                os.close(home)
                raise NetnsError(f"network namespace {netns!r} does not exist") from None
            try:
                _setns(target)
                try:
                    box["result"] = fn()
                finally:
                    _setns(home)
            finally:
                os.close(target)
                os.close(home)
        except BaseException as err:  # handed back to the caller's thread below
            box["error"] = err

    thread = threading.Thread(target=body, name=f"netns:{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetnsError(f"call inside {netns!r} did not finish within {timeout} s")
    if "error" in box:
        err = box["error"]
        assert isinstance(err, BaseException)
        raise err
    return box["result"]  # type: ignore[return-value]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen_tcp_in_netns(
    netns: str, host: str, port: int, *, backlog: int = 128, freebind: bool = False
) -> socket.socket:
    """A listening, non-blocking TCP socket bound to host:port inside `netns`."""

    def make() -> socket.socket:
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if freebind:
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise NetnsError(f"listening on {host}:{port} in {netns!r}: {err}") from err
        return sock

    return run_in_netns(netns, make)


def tcp_socket_in_netns(netns: str, host: str) -> socket.socket:
    """An unconnected, non-blocking TCP socket of host's family, living in `netns`.

    Connect it from an event loop (`loop.sock_connect`) to reach addresses as that namespace sees
    them.
    """

    def make() -> socket.socket:
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    return run_in_netns(netns, make)


def connect_tcp_in_netns(netns: str, host: str, port: int, timeout: float = 2.0) -> socket.socket:
    """A blocking TCP connection to host:port made from inside `netns` (timeout applies after)."""

    def make() -> socket.socket:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            raise NetnsError(f"connecting to {host}:{port} from {netns!r}: {err}") from err

    return run_in_netns(netns, make, timeout=timeout + DEFAULT_TIMEOUT)


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    stdin: str | None = None,
) -> str:
    """Run a command, return its stdout; a failure raises NetnsError with the command and stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=stdin
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetnsError(f"running {' '.join(argv)!r}: {err}") from err
    if check and done.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)!r} exited {done.returncode}: {done.stderr.strip() or done.stdout}"
        )
    return done.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """`ip [-n NETNS] ARGS...`."""
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, *args], check=check)


def ip_batch(netns: str, commands: Sequence[str]) -> None:
    """Run many `ip` commands in one process inside `netns` (`ip -n NETNS -batch -`)."""
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], stdin="\n".join(commands) + "\n")


def ip_netns_exec(
    netns: str, *argv: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> str:
    """`ip netns exec NETNS ARGV...`, waited for."""
    return run(["ip", "netns", "exec", netns, *argv], timeout=timeout, check=check)


def sysctls(netns: str, values: dict[str, str | int]) -> None:
    """Set sysctls inside `netns` (never on the host: the namespace is mandatory).

    Written through /proc/sys from a thread inside the namespace: net.* entries follow the
    writing thread's namespace, and one thread beats one `sysctl` process per key.
    """
    if not netns:
        raise NetnsError(f"refusing to set {sorted(values)} outside a namespace")

    def write() -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            try:
                path.write_text(f"{value}\n")
            except OSError as err:
                raise NetnsError(f"setting {key}={value} in {netns!r}: {err}") from err

    run_in_netns(netns, write)


def read_sysctl(netns: str, key: str) -> str:
    """The value of a sysctl as seen inside `netns`."""
    path = Path("/proc/sys") / key.replace(".", "/")
    return run_in_netns(netns, lambda: path.read_text().strip())


def mac_address(netns: str, ifname: str) -> str:
    """The MAC of `ifname` inside `netns` (SIOCGIFHWADDR; /sys would show the host's view)."""

    def query() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                raw = fcntl.ioctl(sock, SIOCGIFHWADDR, struct.pack("256s", ifname.encode()))
            except OSError as err:
                raise NetnsError(f"reading the MAC of {ifname!r} in {netns!r}: {err}") from err
        return ":".join(f"{b:02x}" for b in raw[18:24])

    return run_in_netns(netns, query)


def list_netns() -> list[str]:
    """Names of the namespaces under /run/netns."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_pids(netns: str) -> list[int]:
    """PIDs of the processes living in `netns`."""
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in out.split() if word.isdigit()]
