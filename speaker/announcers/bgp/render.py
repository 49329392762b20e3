"""ExaBGP's configuration for one session, and the API commands that change its routes: pure text
built only from `ipaddress` objects, ints and enums, so no user text can add a line.

The one user string that reaches ExaBGP is a TCP-MD5 password: it is written base64-encoded
(`md5-base64 true`), so whatever it holds cannot end the statement, and only into the
configuration file, which the announcer writes 0600 in its 0700 directory.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from lbctl.core.bgproutes import IPNetwork, RouteAttrs, Session
from lbctl.core.model import Community, CommunityKind
from speaker.announcers.bgp.api import BATCH

PROCESS = "lbctl"  # the name of the API process in the configuration
MULTIHOP_TTL = 255  # ebgpMultiHop, as MetalLB sets it
_SAFE_PATH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+")


class RenderError(ValueError):
    """A value that cannot be written into ExaBGP's configuration safely."""


def _path_word(text: str) -> str:
    """A path or program in the `run` line: ExaBGP splits it on whitespace and `;` ends it."""
    if not text or not set(text) <= _SAFE_PATH:
        raise RenderError(f"path {text!r}: only letters, digits and / . _ - + are allowed")
    return text


def check_line(line: str) -> str:
    """The last guard before a command goes out: one line of printable ASCII. The builders below
    cannot produce anything else; this makes sure a future one cannot either."""
    if not line or not line.isascii() or not line.isprintable() or ";" in line:
        raise RenderError(f"command {line[:80]!r}: not one line of printable ASCII without ;")
    return line


def config(session: Session, relay: Sequence[str]) -> str:
    """The configuration of one ExaBGP holding `session`; `relay` is the API process's argv."""
    peer = session.peer
    ip = ipaddress.ip_address(peer.address)  # re-made: nothing but an address gets through
    family = "ipv4 unicast" if ip.version == 4 else "ipv6 unicast"
    lines = [
        f"process {PROCESS} {{",
        f"    run {' '.join(_path_word(word) for word in relay)};",
        "    encoder json;",
        "}",
        f"neighbor {ip} {{",
        f"    router-id {ipaddress.IPv4Address(session.router_id)};",
        f"    local-as {_int(peer.my_asn)};",
        f"    peer-as {_int(peer.peer_asn)};",
        f"    connect {_int(peer.port)};",
        f"    hold-time {int(peer.hold_time)};",
        "    group-updates true;",
        "    adj-rib-out true;",
    ]
    if session.local_address is not None:
        lines.append(f"    local-address {ipaddress.ip_address(session.local_address)};")
    if peer.ebgp_multihop:
        lines.append(f"    outgoing-ttl {MULTIHOP_TTL};")
    if session.password is not None:
        encoded = base64.b64encode(session.password.reveal().encode()).decode("ascii")
        lines += ["    md5-base64 true;", f"    md5-password {encoded};"]
    lines += [
        f"    family {{ {family}; }}",
        f"    api {{ processes [ {PROCESS} ]; neighbor-changes; }}",
        "}",
    ]
    return "\n".join(lines) + "\n"


_COMMUNITY_BITS = {CommunityKind.STANDARD: (2, 16), CommunityKind.LARGE: (3, 32)}


def _community(community: Community) -> str:
    """`A:B` or `A:B:C` from ints only; a wrong count or an out-of-range part is refused here
    rather than by ExaBGP (whose `error` would not say which)."""
    count, bits = _COMMUNITY_BITS[CommunityKind(community.kind)]
    parts = [_int(p) for p in community.parts]
    if len(parts) != count or not all(0 <= p < 1 << bits for p in parts):
        raise RenderError(f"community {community.parts!r}: {count} parts of {bits} bits")
    return ":".join(str(p) for p in parts)


def _int(value: object) -> int:
    """An int, and only an int (not a string that int() would accept, nor a bool)."""
    if type(value) is not int:
        raise RenderError(f"{value!r} is not an int")
    return value


def attributes(attrs: RouteAttrs) -> str:
    """`next-hop self` and the path attributes, as ExaBGP's route syntax writes them."""
    words = ["next-hop self"]
    if attrs.local_pref is not None:
        words.append(f"local-preference {_int(attrs.local_pref)}")
    standard = [_community(c) for c in attrs.communities if c.kind is CommunityKind.STANDARD]
    large = [_community(c) for c in attrs.communities if c.kind is CommunityKind.LARGE]
    if standard:
        words.append(f"community [ {' '.join(standard)} ]")
    if large:
        words.append(f"large-community [ {' '.join(large)} ]")
    return " ".join(words)


def _network(net: object) -> IPNetwork:
    """A prefix, and only an `ipaddress` network (not text that ip_network() would read)."""
    if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise RenderError(f"{net!r} is not an ipaddress network")
    return net


def _prefix(net: IPNetwork) -> str:
    return str(_network(net))


def announcements(routes: Mapping[IPNetwork, RouteAttrs]) -> list[tuple[str, list[IPNetwork]]]:
    """Commands announcing `routes`: one per set of attributes and per BATCH prefixes, each with
    the prefixes it carries. Prefixes of both families never share a command."""
    groups: dict[tuple[int, RouteAttrs], list[IPNetwork]] = {}
    checked = [(_network(net), attrs) for net, attrs in routes.items()]
    for net, attrs in sorted(checked, key=lambda item: (item[0].version, item[0])):
        groups.setdefault((net.version, attrs), []).append(net)
    out = []
    for (_, attrs), nets in groups.items():
        head = f"announce attributes {attributes(attrs)} nlri"
        for chunk in _chunks(nets):
            out.append((f"{head} {' '.join(_prefix(n) for n in chunk)}", chunk))
    return out


def withdrawals(nets: Iterable[IPNetwork]) -> list[tuple[str, list[IPNetwork]]]:
    """Commands withdrawing `nets`, BATCH prefixes a command, one family a command."""
    by_family: dict[int, list[IPNetwork]] = {}
    for net in sorted(map(_network, nets), key=lambda n: (n.version, n)):
        by_family.setdefault(net.version, []).append(net)
    return [
        (f"withdraw attributes next-hop self nlri {' '.join(_prefix(n) for n in chunk)}", chunk)
        for nets_of in by_family.values()
        for chunk in _chunks(nets_of)
    ]


def _chunks(nets: list[IPNetwork]) -> Iterable[list[IPNetwork]]:
    for start in range(0, len(nets), BATCH):
        yield nets[start : start + BATCH]


HEALTH = "version"  # read-only; ExaBGP answers `exabgp 5.0.15` then `done`
