"""ExaBGP configuration and API commands of the BGP announcer (pure text): every Session field,
batching by attributes, the last-line guard, and that no user text can add a line."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest

from lbctl.core.bgproutes import RouteAttrs, Session
from lbctl.core.model import BGPPeer, Community, CommunityKind, PeerName, Secret
from speaker.announcers.bgp import render
from speaker.announcers.bgp.api import BATCH

NET = ipaddress.ip_network
RELAY = ["/usr/bin/python3", "/opt/relay.py", "/run/x/api.sock"]
STD, LARGE = CommunityKind.STANDARD, CommunityKind.LARGE
BAD_TEXT = ["a\nb", "a\rb", "a;b", "a\x00b", "a}b", "a b", "a\tb", "a\x1bb", "é"]


def peer(**kw: Any) -> BGPPeer:
    base: dict[str, Any] = {
        "name": PeerName("tor"), "my_asn": 64501, "peer_asn": 64500,
        "address": ipaddress.ip_address("192.0.2.1"), "hold_time": 9.0,
    }  # fmt: skip
    return BGPPeer(**{**base, **kw})


def session(**kw: Any) -> Session:
    return Session(peer(**kw), ipaddress.IPv4Address("192.0.2.11"))


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_config_renders_every_session_field() -> None:
    s = Session(
        peer(port=1179, ebgp_multihop=True),
        ipaddress.IPv4Address("198.51.100.7"),
        ipaddress.ip_address("192.0.2.11"),
        Secret("s3cret"),
    )
    conf = lines(render.config(s, RELAY))
    for want in [
        "neighbor 192.0.2.1 {", "router-id 198.51.100.7;", "local-as 64501;", "peer-as 64500;",
        "connect 1179;", "hold-time 9;", "local-address 192.0.2.11;", "outgoing-ttl 255;",
        "md5-base64 true;", f"md5-password {base64.b64encode(b's3cret').decode()};",
        "family { ipv4 unicast; }", "api { processes [ lbctl ]; neighbor-changes; }",
        f"run {' '.join(RELAY)};", "encoder json;",
    ]:  # fmt: skip
        assert want in conf
    assert "s3cret" not in render.config(s, RELAY)


def test_config_leaves_out_what_the_session_does_not_set() -> None:
    conf = render.config(session(), RELAY)
    for absent in ["local-address", "outgoing-ttl", "md5", "ttl-security"]:
        assert absent not in conf


def test_ipv6_peer_gets_the_ipv6_family() -> None:
    conf = render.config(session(address=ipaddress.ip_address("2001:db8::1")), RELAY)
    assert "neighbor 2001:db8::1 {" in conf
    assert "family { ipv6 unicast; }" in conf


@pytest.mark.parametrize(
    "password", ['se"cr;et\nline', "x}\nneighbor 6.6.6.6 {", "\x00\r\t", "ä€"], ids=repr
)
def test_any_password_stays_one_base64_word(password: str) -> None:
    conf = render.config(Session(peer(), ipaddress.IPv4Address("192.0.2.11"), None,
                                 Secret(password)), RELAY)  # fmt: skip
    (line,) = [x for x in lines(conf) if x.startswith("md5-password")]
    word = line.removeprefix("md5-password ").removesuffix(";")
    assert base64.b64decode(word).decode() == password
    assert conf.count("\n") == render.config(session(), RELAY).count("\n") + 2


@pytest.mark.parametrize("word", BAD_TEXT, ids=repr)
def test_relay_path_with_unsafe_characters_is_refused(word: str) -> None:
    with pytest.raises(render.RenderError):
        render.config(session(), ["/usr/bin/python3", f"/run/{word}/relay.py"])


@pytest.mark.parametrize(
    "field",
    [
        {"my_asn": "64501\nannounce route 0.0.0.0/0 next-hop self"},
        {"peer_asn": "64500;"},
        {"port": "179\r"},
        {"my_asn": True},
        {"address": "192.0.2.1\n"},
    ],
    ids=["asn-newline", "asn-semicolon", "port-cr", "asn-bool", "address-newline"],
)
def test_peer_values_that_are_not_their_type_are_refused(field: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # RenderError is a ValueError, as ipaddress's are
        render.config(session(**field), RELAY)


def test_router_id_with_text_is_refused() -> None:
    bad = Session(peer(), "192.0.2.11\nx")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render.config(bad, RELAY)


def test_attributes_in_exabgp_syntax() -> None:
    attrs = RouteAttrs(150, (Community(STD, (64500, 7)), Community(LARGE, (64500, 1, 2)),
                             Community(STD, (65535, 65281))))  # fmt: skip
    assert render.attributes(attrs) == (
        "next-hop self local-preference 150 community [ 64500:7 65535:65281 ]"
        " large-community [ 64500:1:2 ]"
    )
    assert render.attributes(RouteAttrs()) == "next-hop self"


@pytest.mark.parametrize(
    "community",
    [
        Community(STD, ("64500\nannounce route 0.0.0.0/0 next-hop self", 1)),  # type: ignore[arg-type]
        Community(STD, ("1;", 2)),  # type: ignore[arg-type]
        Community(STD, (" 7\r", 2)),  # type: ignore[arg-type]
        Community(STD, ("\x00", 2)),  # type: ignore[arg-type]
        Community(STD, (65536, 1)),
        Community(STD, (-1, 1)),
        Community(STD, (1, 2, 3)),
        Community(LARGE, (1, 2)),
        Community(LARGE, (1 << 32, 0, 0)),
        Community(STD, (True, 1)),
    ],
    ids=[
        "newline",
        "semicolon",
        "int-parsable-cr",
        "nul",
        "16-bit",
        "negative",
        "3-standard",
        "2-large",
        "32-bit",
        "bool",
    ],
)
def test_community_values_that_could_add_text_are_refused(community: Community) -> None:
    with pytest.raises(render.RenderError):
        render.attributes(RouteAttrs(communities=(community,)))


@pytest.mark.parametrize("local_pref", ["100\nx", "100", 1.5, None.__class__], ids=repr)
def test_local_pref_must_be_an_int(local_pref: object) -> None:
    with pytest.raises(render.RenderError):
        render.attributes(RouteAttrs(local_pref=local_pref))  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["203.0.113.1/32\n", "203.0.113.1/32;x", "2001:db8::/64\r"])
def test_a_prefix_that_is_text_is_refused(prefix: str) -> None:
    with pytest.raises(render.RenderError):
        render.announcements({prefix: RouteAttrs()})  # type: ignore[dict-item]
    with pytest.raises(render.RenderError):
        render.withdrawals([prefix])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "line", [t for t in BAD_TEXT if t not in ("a}b", "a b")] + ["x\x7f", "x\u2028y", ""], ids=repr
)
def test_the_last_guard_refuses_anything_but_one_printable_line(line: str) -> None:
    with pytest.raises(render.RenderError):
        render.check_line(line)


def test_announcements_batch_by_attributes_and_family() -> None:
    a, b = RouteAttrs(), RouteAttrs(communities=(Community(STD, (1, 2)),))
    routes = {NET("203.0.113.200/32"): a, NET("203.0.113.201/32"): b,
              NET("203.0.113.202/32"): a, NET("2001:db8:3::1/128"): a}  # fmt: skip
    got = render.announcements(routes)
    assert [line for line, _ in got] == [
        "announce attributes next-hop self nlri 203.0.113.200/32 203.0.113.202/32",
        "announce attributes next-hop self community [ 1:2 ] nlri 203.0.113.201/32",
        "announce attributes next-hop self nlri 2001:db8:3::1/128",
    ]
    assert sum(len(nets) for _, nets in got) == 4
    for line, _ in got:
        render.check_line(line)


def test_many_prefixes_are_cut_into_batches() -> None:
    nets = list(ipaddress.IPv6Network("2001:db8:3:2::/112").subnets(new_prefix=128))
    nets = nets[: BATCH * 2 + 1]
    got = render.announcements(dict.fromkeys(nets, RouteAttrs()))
    assert [len(chunk) for _, chunk in got] == [BATCH, BATCH, 1]
    gone = render.withdrawals(nets)
    assert [len(chunk) for _, chunk in gone] == [BATCH, BATCH, 1]
    assert gone[0][0].startswith("withdraw attributes next-hop self nlri 2001:db8:3:2::/128 ")


def test_withdrawals_keep_families_apart() -> None:
    got = render.withdrawals([NET("2001:db8:3::1/128"), NET("203.0.113.200/32")])
    assert [line for line, _ in got] == [
        "withdraw attributes next-hop self nlri 203.0.113.200/32",
        "withdraw attributes next-hop self nlri 2001:db8:3::1/128",
    ]
