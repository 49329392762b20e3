"""BIRD 2 in the bed's router namespace: start it, ask it things; used by the topology."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lbctl.lab import nsutil, plan

if TYPE_CHECKING:
    from lbctl.lab.topology import Topology

START_TIMEOUT = 5.0  # BIRD answers on its socket within ~50 ms here; this is only a bound


class BirdError(RuntimeError):
    """BIRD did not start or did not answer."""


def paths(run_dir: Path) -> tuple[Path, Path, Path]:
    """(config, control socket, pid file) of a run's BIRD."""
    return run_dir / "bird.conf", run_dir / "bird.ctl", run_dir / "bird.pid"


def start(topology: Topology, config_text: str) -> int:
    """Write the config, run `bird -f -c CONF -s SOCK -P PID` in the router namespace, wait until
    `show status` answers, return the PID (recorded in the topology, so down() stops it)."""
    conf, sock, pidfile = paths(topology.run_dir)
    conf.write_text(config_text)
    # Parse first: a config error then reads as one, not as a daemon that never answered.
    nsutil.run(["bird", "-p", "-c", str(conf)])
    proc = topology.spawn(
        topology.router.netns,
        ["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(pidfile)],
        role="bird",
    )
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (topology.run_dir / "logs" / "bird.log").read_text(errors="replace")
            topology.forget_pid(proc.pid)
            raise BirdError(f"bird exited {proc.returncode} at start: {log.strip()[-500:]}")
        if sock.exists():
            try:
                last = birdc(topology.run_dir, "show status")
            except BirdError as err:
                last = str(err)
            else:
                if "Daemon is up and running" in last:
                    return proc.pid
        time.sleep(0.02)
    topology.stop_pid(proc.pid)
    raise BirdError(f"bird in {topology.router.netns} did not answer in {START_TIMEOUT} s: {last}")


def birdc(run_dir: Path, command: str) -> str:
    """Run one birdc command against the run's control socket; returns the output text.

    birdc exits 1 when a command finds nothing ("Network not found"): that is an answer, not an
    error. Only an unreachable daemon raises.
    """
    _, sock, _ = paths(run_dir)
    argv = ["birdc", "-s", str(sock), *command.split()]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5.0, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BirdError(f"running {' '.join(argv)!r}: {err}") from err
    out = done.stdout + done.stderr
    if "BIRD" not in out.split("\n", 1)[0]:
        raise BirdError(f"{' '.join(argv)!r}: BIRD did not answer: {out.strip()}")
    return out


def router_config(
    neighbors: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    *,
    router_id: ipaddress.IPv4Address = plan.GATEWAY4,
    local_asn: int = plan.ROUTER_ASN,
    peer_asn: int = plan.NODE_ASN,
    passwords: Mapping[str, str] | None = None,
) -> str:
    """A BIRD config for the bed's router: passive BGP to each neighbour (the nodes; eBGP unless
    the two ASNs are equal), import everything, export nothing, and ECMP routes into the router
    namespace's kernel table. `passwords` maps a neighbour's address to its TCP-MD5 password."""
    lines = [
        f"router id {router_id};",
        "protocol device {}",
        # merge paths: several nodes announcing one VIP become one multipath kernel route.
        "protocol kernel kernel4 { ipv4 { export all; }; merge paths on; }",
        "protocol kernel kernel6 { ipv6 { export all; }; merge paths on; }",
    ]
    for i, peer in enumerate(neighbors, start=1):
        family = "ipv4" if peer.version == 4 else "ipv6"
        local = plan.GATEWAY4 if peer.version == 4 else plan.GATEWAY6
        password = (passwords or {}).get(str(peer))
        secret = f' password "{password}";' if password is not None else ""
        lines.append(
            f"protocol bgp peer{i} {{ local {local} as {local_asn}; neighbor {peer} as {peer_asn};"
            f" passive;{secret} {family} {{ import all; export none; }}; }}"
        )
    return "\n".join(lines) + "\n"
