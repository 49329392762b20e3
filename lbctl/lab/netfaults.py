"""Network faults inside a bed namespace, with nftables (this kernel has no netem): random loss on
an interface, one-way drops, a node cut off from the API; each in a table of its own, so
kube-proxy's tables are never touched and removing the fault is deleting its table. Used by
tests and benches; never applied outside a namespace the bed created."""

from __future__ import annotations

from lbctl.lab import nsutil
from lbctl.lab.plan import runid_of
from lbctl.lab.relay import NODE_API_PORT


class FaultError(RuntimeError):
    """A fault could not be applied (or was aimed outside the bed)."""


def _load(netns: str, table: str, ruleset: str) -> None:
    if runid_of(netns) is None:
        raise FaultError(f"refusing a fault outside the bed's namespaces: {netns!r}")
    clear(netns, table)
    nsutil.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], stdin=ruleset)


def clear(netns: str, table: str) -> None:
    """Remove one fault (its table); nothing happens if it is not there."""
    family, _, name = table.partition(" ")
    nsutil.run(["ip", "netns", "exec", netns, "nft", "delete", "table", family, name], check=False)


LOSS = "netdev lbctl_loss"
CUT_API = "inet lbctl_cut_api"
DROP = "inet lbctl_drop"


def loss(netns: str, ifname: str, percent: int) -> str:
    """Drop `percent` % of the frames arriving on `ifname` inside `netns`, at random."""
    if not 0 < percent < 100:
        raise FaultError(f"loss of {percent} %: want 1..99")
    _load(
        netns,
        LOSS,
        f"""table {LOSS} {{
    chain ingress {{
        type filter hook ingress device "{ifname}" priority -500; policy accept;
        numgen random mod 100 < {percent} drop
    }}
}}
""",
    )
    return LOSS


def cut_api(netns: str) -> str:
    """Cut the node in `netns` off from the API: its connections to the relay are dropped."""
    _load(
        netns,
        CUT_API,
        f"""table {CUT_API} {{
    chain output {{
        type filter hook output priority -500; policy accept;
        tcp dport {NODE_API_PORT} ip daddr 127.0.0.1 drop
    }}
    chain input {{
        type filter hook input priority -500; policy accept;
        tcp sport {NODE_API_PORT} ip saddr 127.0.0.1 drop
    }}
}}
""",
    )
    return CUT_API


def drop(netns: str, rule: str, *, hook: str = "output") -> str:
    """Drop what `rule` matches on its way out of (hook "output") or into ("input") `netns`;
    `rule` is one nft match, e.g. `ip daddr 192.0.2.12 udp dport 7946`."""
    if any(c in rule for c in ";{}\n") or hook not in ("input", "output"):
        raise FaultError(f"one nft match and hook input/output expected, got {rule!r} {hook!r}")
    _load(
        netns,
        DROP,
        f"""table {DROP} {{
    chain {hook} {{
        type filter hook {hook} priority -500; policy accept;
        {rule} drop
    }}
}}
""",
    )
    return DROP
