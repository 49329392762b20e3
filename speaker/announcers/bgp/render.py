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
        f"    local-as {int(peer.my_asn)};",
        f"    peer-as {int(peer.peer_asn)};",
        f"    connect {int(peer.port)};",
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


def _community(community: Community) -> str:
    return ":".join(str(int(p)) for p in community.parts)


def attributes(attrs: RouteAttrs) -> str:
    """`next-hop self` and the path attributes, as ExaBGP's route syntax writes them."""
    words = ["next-hop self"]
    if attrs.local_pref is not None:
        words.append(f"local-preference {int(attrs.local_pref)}")
    standard = [_community(c) for c in attrs.communities if c.kind is CommunityKind.STANDARD]
    large = [_community(c) for c in attrs.communities if c.kind is CommunityKind.LARGE]
    if standard:
        words.append(f"community [ {' '.join(standard)} ]")
    if large:
        words.append(f"large-community [ {' '.join(large)} ]")
    return " ".join(words)


def _prefix(net: IPNetwork) -> str:
    return str(ipaddress.ip_network(net))


def announcements(routes: Mapping[IPNetwork, RouteAttrs]) -> list[tuple[str, list[IPNetwork]]]:
    """Commands announcing `routes`: one per set of attributes and per BATCH prefixes, each with
    the prefixes it carries. Prefixes of both families never share a command."""
    groups: dict[tuple[int, RouteAttrs], list[IPNetwork]] = {}
    for net, attrs in sorted(routes.items(), key=lambda item: (item[0].version, item[0])):
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
    for net in sorted(nets, key=lambda n: (n.version, n)):
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
