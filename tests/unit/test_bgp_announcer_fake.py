"""BGPAnnouncer against a fake ExaBGP (a script that runs the real relay and acknowledges every
command, writing each to a file): the diff, the acks, the status, the hooks, the private files."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lbctl.core.bgproutes import RouteAttrs, Session
from lbctl.core.model import BGPPeer, Community, CommunityKind, PeerName, Secret
from speaker.announcers.bgp import BGPAnnouncer, BGPHooks

NET = ipaddress.ip_network
V1, V2, V6 = NET("203.0.113.200/32"), NET("203.0.113.201/32"), NET("2001:db8:3::1/128")
TOR = PeerName("tor")
PASSWORD = "s3cret-md5;\nx"

# The fake: reads the `run` line of the config ExaBGP would read, runs that relay, says the
# session is up, then answers `done` to each command (`error` to ones holding REFUSE) and logs it.
FAKE = textwrap.dedent("""
    import os, re, subprocess, sys
    conf = open(sys.argv[-1]).read()
    run = re.search(r"run (.*);", conf).group(1).split()
    log = open(os.path.join(os.environ["EXABGP_ROOT"], "commands.log"), "a", buffering=1)
    relay = subprocess.Popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    def say(text):
        relay.stdin.write(text.encode() + b"\\n")
    say('{"type": "state", "neighbor": {"state": "up"}}')
    for line in relay.stdout:
        line = line.decode().strip()
        log.write(line + "\\n")
        if line == "version":
            say("exabgp 5.0.15")
        say("error" if "REFUSE" in line or "65535:666" in line else "done")
""")


def wait_for(check: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must fit in 108 bytes: pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="bgp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Harness:
    def __init__(self, run_dir: Path) -> None:
        fake = run_dir / "fake_exabgp.py"
        fake.write_text(FAKE)
        self.events: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        hooks = BGPHooks(
            on_updates=lambda p, n: self.event("updates", n),
            on_session=lambda p, up, why: self.event("session", up),
            on_prefixes=lambda p, n: self.event("prefixes", n),
            on_command_error=lambda p, text: self.event("error", text),
            on_status=lambda s: self.event("status", dict(s)),
        )
        self.run_dir = run_dir / "run"
        self.announcer = BGPAnnouncer(self.run_dir, hooks=hooks, exabgp=[sys.executable, str(fake)])

    def event(self, kind: str, value: object) -> None:
        with self.lock:
            self.events.append((kind, value))

    def commands(self) -> list[str]:
        logs = sorted(self.run_dir.glob("peer-*/commands.log"))
        return [x for f in logs for x in f.read_text().splitlines() if x != "version"]

    def sent(self, peer: PeerName = TOR) -> frozenset[object]:
        status = self.announcer.statuses().get(peer)
        return status.sent if status else frozenset()

    def settle(self, count: int) -> list[str]:
        """Wait until `count` route commands were acknowledged; return them."""
        wait_for(lambda: len(self.commands()) >= count, what=f"{count} commands")
        return self.commands()


@pytest.fixture
def harness(short_dir: Path) -> Iterator[Harness]:
    h = Harness(short_dir)
    h.announcer.start()
    yield h
    h.announcer.close(timeout=5.0)


def session(password: str | None = None, address: str = "192.0.2.1") -> Session:
    peer = BGPPeer(TOR, 64501, 64500, ipaddress.ip_address(address), hold_time=9.0)
    return Session(peer, ipaddress.IPv4Address("192.0.2.11"), None,
                   Secret(password) if password else None)  # fmt: skip


def test_sync_announces_then_the_same_sync_sends_nothing(harness: Harness) -> None:
    harness.announcer.configure({TOR: session()})
    harness.announcer.sync({TOR: {V1: RouteAttrs(), V2: RouteAttrs()}})
    wait_for(lambda: harness.sent() == {V1, V2}, what="V1, V2 acknowledged")
    assert harness.commands() == [
        "announce attributes next-hop self nlri 203.0.113.200/32 203.0.113.201/32"
    ]
    harness.announcer.sync({TOR: {V1: RouteAttrs(), V2: RouteAttrs()}})  # equal, not identical
    harness.announcer.sync({TOR: {V2: RouteAttrs(), V1: RouteAttrs()}})
    # Let health checks go by: any route command would come before the next `version`'s ack.
    log = harness.run_dir.glob("peer-*/commands.log")
    path = next(log)
    wait_for(lambda: path.read_text().count("version") >= 2, what="two health checks")
    assert len(harness.commands()) == 1


def test_changed_attributes_are_a_reannouncement_and_removal_a_withdrawal(
    harness: Harness,
) -> None:
    harness.announcer.configure({TOR: session()})
    harness.announcer.sync({TOR: {V1: RouteAttrs(), V2: RouteAttrs()}})
    harness.settle(1)
    community = Community(CommunityKind.STANDARD, (64500, 7))
    harness.announcer.sync({TOR: {V1: RouteAttrs(), V2: RouteAttrs(100, (community,))}})
    assert harness.settle(2)[1] == (
        "announce attributes next-hop self local-preference 100 community [ 64500:7 ] "
        "nlri 203.0.113.201/32"
    )
    harness.announcer.sync({TOR: {V2: RouteAttrs(100, (community,))}})
    assert harness.settle(3)[2] == "withdraw attributes next-hop self nlri 203.0.113.200/32"
    wait_for(lambda: harness.sent() == {V2}, what="V1 gone from sent")
    harness.announcer.sync({})
    assert harness.settle(4)[3] == "withdraw attributes next-hop self nlri 203.0.113.201/32"
    wait_for(lambda: harness.sent() == frozenset(), what="nothing sent")
    updates = [n for kind, n in harness.events if kind == "updates"]
    assert updates == [2, 1, 1, 1]


def test_hooks_report_the_session_and_the_prefix_count(harness: Harness) -> None:
    harness.announcer.configure({TOR: session()})
    harness.announcer.sync({TOR: {V1: RouteAttrs()}})
    wait_for(lambda: harness.sent() == {V1}, what="V1 acknowledged")
    with harness.lock:
        events = list(harness.events)
    assert ("session", True) in events
    assert ("prefixes", 1) in events
    status = harness.announcer.statuses()[TOR]
    assert status.established and status.error == "" and status.since > 0
    harness.announcer.configure({})
    wait_for(lambda: TOR not in harness.announcer.statuses(), what="the peer removed")
    wait_for(lambda: ("prefixes", 0) in harness.events, what="its prefix count back to 0")


def test_a_refused_command_is_reported_and_not_retried(harness: Harness) -> None:
    harness.announcer.configure({TOR: session()})
    bad = RouteAttrs(communities=(Community(CommunityKind.STANDARD, (65535, 666)),))
    harness.announcer.sync({TOR: {V1: bad, V2: RouteAttrs()}})
    wait_for(lambda: harness.sent() == {V2}, what="V2 acknowledged, V1 refused")
    path = next(harness.run_dir.glob("peer-*/commands.log"))
    wait_for(lambda: path.read_text().count("version") >= 2, what="two health checks")
    assert len(harness.commands()) == 2, harness.commands()
    assert any(kind == "error" for kind, _ in harness.events)


def test_other_family_prefixes_are_not_sent_to_a_peer(harness: Harness) -> None:
    harness.announcer.configure({TOR: session()})
    harness.announcer.sync({TOR: {V1: RouteAttrs(), V6: RouteAttrs()}})
    wait_for(lambda: harness.sent() == {V1}, what="V1 acknowledged")
    assert all("2001:db8" not in c for c in harness.commands())


def test_the_password_is_only_in_a_0600_file_in_a_0700_directory(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.announcer.configure({TOR: session(PASSWORD)})
    harness.announcer.sync({TOR: {V1: RouteAttrs()}})
    wait_for(lambda: harness.sent() == {V1}, what="V1 acknowledged")
    (conf,) = harness.run_dir.glob("peer-*/exabgp.conf")
    assert conf.stat().st_mode & 0o777 == 0o600
    assert conf.parent.stat().st_mode & 0o777 == 0o700
    assert harness.run_dir.stat().st_mode & 0o777 == 0o700
    assert PASSWORD not in conf.read_text() and "s3cret" not in conf.read_text()
    pid = harness.announcer.pids()[TOR]
    for what in ("cmdline", "environ"):
        assert b"s3cret" not in Path(f"/proc/{pid}/{what}").read_bytes()
    for f in conf.parent.iterdir():
        if f != conf and f.is_file():
            assert b"s3cret" not in f.read_bytes(), f
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(harness.events) and "s3cret" not in repr(session(PASSWORD))
    assert "s3cret" not in json.dumps([str(e) for e in harness.events])


def test_close_stops_every_exabgp_by_pid(short_dir: Path) -> None:
    h = Harness(short_dir)
    h.announcer.start()
    h.announcer.configure({TOR: session(), PeerName("tor6"): session(address="2001:db8::1")})
    wait_for(lambda: len(h.announcer.pids()) == 2, what="two ExaBGPs")
    wait_for(lambda: all(s.established for s in h.announcer.statuses().values()), what="up")
    pids = list(h.announcer.pids().values())
    began = time.monotonic()
    h.announcer.close(timeout=5.0)
    assert time.monotonic() - began < 5.0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_refused_command_among_others_leaves_exactly_its_prefixes_unsent(
    harness: Harness,
) -> None:
    refused = RouteAttrs(None, (Community(CommunityKind.STANDARD, (65535, 666)),))
    plain = {NET(f"198.51.100.{i}/32"): RouteAttrs() for i in range(120)}
    bad = {NET(f"203.0.113.{i}/32"): refused for i in range(5)}
    more = {NET(f"203.0.113.{i}/32"): RouteAttrs() for i in range(100, 140)}
    harness.announcer.configure({TOR: session()})
    harness.announcer.sync({TOR: {**plain, **bad, **more}})
    commands = harness.settle(5)  # 3 + 1 + 1 commands of BATCH (40) prefixes at most
    wait_for(lambda: harness.sent() == plain.keys() | more.keys(), what="all but the refused")
    assert sum("65535:666" in c for c in commands) == 1
    with harness.lock:
        assert sum(1 for kind, _ in harness.events if kind == "error") == 1
