"""The speaker's BGP side (speaker/bgp.py) with a recording announcer and a fake API: sessions
from the config and the node, passwords from Secrets (cached, never logged), the routes handed
over, statuses turned into the published annotation and the condition's words."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping

import pytest

from lbctl.core import bgpcondition
from lbctl.core.adapt import EndpointInfo, EndpointSliceInfo, HeldService, NodeInfo
from lbctl.core.bgpplan import plan_bgp
from lbctl.core.bgproutes import Desired, PeerStatus, Session, Statuses
from lbctl.core.model import (
    AddressRange,
    BGPAdvertisement,
    BGPPeer,
    Config,
    NodeName,
    PeerName,
    Pool,
    PoolName,
    SecretRef,
    ServiceKey,
)
from speaker.bgp import BGPSide
from speaker.kube import KubeError
from speaker.metrics import Metrics

IP = ipaddress.ip_address
ME = NodeName("node-1")
NODE = NodeInfo(ME, internal_ips=(IP("192.0.2.11"), IP("2001:db8::11")), ready=True)
POOL = Pool(PoolName("p"), (AddressRange(IP("203.0.113.193"), IP("203.0.113.200"), "x"),))
REF = SecretRef("lbctl-system", "router-md5")
PLAIN = BGPPeer(PeerName("plain"), 64501, 64500, IP("192.0.2.1"))
SECURED = BGPPeer(PeerName("secured"), 64501, 64500, IP("192.0.2.2"), password_secret=REF)
SIX = BGPPeer(PeerName("six"), 64501, 64500, IP("2001:db8::1"))
CONFIG = Config(pools=(POOL,), bgp_advertisements=(BGPAdvertisement("all"),),
                peers=(PLAIN, SECURED, SIX))  # fmt: skip
WEB = HeldService(ServiceKey("default/web"), (IP("203.0.113.193"),))
READY = EndpointInfo((IP("198.51.100.2"),), ME, True, True, False)
SLICES = {WEB.key: (EndpointSliceInfo("web-x", WEB.key, (READY,)),)}


class Announcer:
    def __init__(self) -> None:
        self.sessions: Mapping[PeerName, Session] = {}
        self.desired: Desired = {}

    def start(self) -> None: ...
    def configure(self, sessions: Mapping[PeerName, Session]) -> None:
        self.sessions = sessions

    def sync(self, desired: Desired) -> None:
        self.desired = desired

    def statuses(self) -> Statuses:
        return {}

    def close(self) -> None: ...


class Kube:
    def __init__(self, secret: str | None = "md5-value", status: int = 0) -> None:
        self.secret, self.status, self.reads = secret, status, 0
        self.annotations: list[tuple[str, str]] = []

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        self.reads += 1
        if self.status:
            raise KubeError(f"reading secret {namespace}/{name}", self.status, "Forbidden")
        return self.secret

    def annotate_node(self, key: str, value: str) -> None:
        self.annotations.append((key, value))


def side(kube: Kube) -> tuple[BGPSide, Announcer]:
    announcer = Announcer()
    return BGPSide(ME, kube, Metrics(), announcer, lambda _: None), announcer  # type: ignore[arg-type]


def update(bgp: BGPSide) -> None:
    plans = plan_bgp(CONFIG, [WEB], SLICES, [NODE])
    asyncio.run(bgp.update(CONFIG, {p.service: p for p in plans}, NODE))


def test_sessions_take_the_node_addresses_and_the_secret_password() -> None:
    kube = Kube()
    bgp, announcer = side(kube)
    update(bgp)
    sessions = announcer.sessions
    assert set(sessions) == {"plain", "secured", "six"}
    assert sessions[PeerName("plain")].router_id == IP("192.0.2.11")
    assert sessions[PeerName("plain")].local_address == IP("192.0.2.11")
    assert sessions[PeerName("six")].local_address == IP("2001:db8::11")
    password = sessions[PeerName("secured")].password
    assert password is not None and password.reveal() == "md5-value"
    assert "md5-value" not in repr(sessions)
    update(bgp)
    assert kube.reads == 1, "a Secret is read again only after SECRET_TTL"


def test_an_unreadable_secret_leaves_its_peer_out_and_says_which(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bgp, announcer = side(Kube(status=403))
    with caplog.at_level(logging.ERROR):
        update(bgp)
        update(bgp)
    assert set(announcer.sessions) == {"plain", "six"}
    errors = [r.getMessage() for r in caplog.records if "bgp_peer_unusable" in r.getMessage()]
    assert len(errors) == 1, "said once per cause"
    assert "peer secured: passwordSecret lbctl-system/router-md5 key password" in errors[0]
    assert "403" in errors[0]


def test_routes_go_only_to_configured_sessions_and_statuses_are_published() -> None:
    kube = Kube(secret=None)  # the key is missing: "secured" is left out
    bgp, announcer = side(kube)
    update(bgp)
    net = ipaddress.ip_network("203.0.113.193/32")
    assert set(announcer.desired) == {"plain"}  # "six" is IPv6: no IPv4 prefix for it
    assert set(announcer.desired[PeerName("plain")]) == {net}
    bgp.statuses = {PeerName("plain"): PeerStatus(True, frozenset({net}))}
    asyncio.run(bgp.publish())
    asyncio.run(bgp.publish())
    assert kube.annotations == [
        (bgpcondition.SESSIONS_ANNOTATION, '{"plain":"Established","secured":"Down","six":"Down"}')
    ], "written once, when it changed"
    plan = plan_bgp(CONFIG, [WEB], SLICES, [NODE])[0]
    assert bgp.writes(plan, [ME])
    said = bgp.verdict(plan, {})
    assert said.held
    assert (
        said.message == "announced 203.0.113.193 by node-1 to plain (Established), secured (Down)"
    )
    bgp.statuses = {PeerName("plain"): PeerStatus(True, frozenset())}  # not acknowledged yet
    assert not bgp.verdict(plan, {}).held
