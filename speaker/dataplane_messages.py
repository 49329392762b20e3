"""The data plane's message half: liveness messages to and from the other speakers (probes,
acks, indirect probes, hand-backs; each carries this node's report while the peer lacks it), what
a peer's report says beyond liveness (its MACs, its API view), and the ARP/NS checks of VIPs (a
suspect owner's, and this node's own for a DuplicateResponder). Messages is the base class of
speaker.dataplane's DataPlane, which owns the loop, the plan and the state declared below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from lbctl.core.liveness import Liveness
from lbctl.core.liveness_types import CHECK_TRIES, CHECK_WAIT, Actions, GroupView, Report
from lbctl.core.model import IPAddress, NodeName
from speaker.announcers.layer2.errors import AnnounceError
from speaker.dataplane_types import Announcer, Held, Plan
from speaker.probes import Kind, Message, Reports, WireError
from speaker.probesocket import Endpoint

log = logging.getLogger("lbctl.speaker")
# s between ARP/NS probes of each VIP this node announces: an answer from a MAC that is no
# speaker's is a DuplicateResponder (a stray static entry, kube-proxy IPVS without strictARP).
DUPLICATE_CHECK_EVERY = 5.0
# VIPs ARP-probed per suspect owner: any answer proves its responder alive, so a few suffice; a
# node owning 300 groups would otherwise cost 300 probes and tasks per suspicion, on a loop that
# is likely already behind (a saturated machine is when suspicions come).
ARP_CHECKS_PER_OWNER = 3
# s between two repairs of one VIP (a new burst after another speaker's frame claimed a VIP this
# node keeps); the other speaker yields within one burst interval
REPAIR_EVERY = 1.0
# a new report for a change of the holdings alone waits this many times what the last one cost
REPORT_PACE = 10
# s an unknown MAC's answer waits, while some planned speaker has not been heard from yet, for
# their reports (asked for at once) before it counts as a DuplicateResponder: a speaker that
# just started or just had its first plan has not heard every other speaker's MACs
UNHEARD_WAIT = 3 * CHECK_WAIT


class Messages:
    """Sends and receives liveness messages and runs the ARP/NS checks, on the data-plane loop.
    Holds the message state; reads the rest of the data plane's (set by DataPlane)."""

    # set by DataPlane
    me: NodeName
    announcer: Announcer
    bind: tuple[str, int]
    on_foreign: Callable[[IPAddress, str, str], None]
    liveness: Liveness
    plan: Plan
    fresh: bool
    _group_of: dict[IPAddress, GroupView]
    _held: dict[IPAddress, Held]

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None  # opened by DataPlane's loop
        self._seq = 0
        # indirect probes: seq -> (the asker's address, the asker, the target)
        self._relays: dict[int, tuple[tuple[str, int], NodeName, NodeName]] = {}
        self.speaker_macs: dict[str, NodeName] = {}  # every MAC a peer's report listed
        self.peer_fresh: dict[NodeName, bool] = {}
        self._taken_from_me: set[IPAddress] = set()  # while leaving: groups others announce
        self.reports = Reports()
        self._report_held = -1  # the version of Liveness.held my report was made from
        self._report_due = 0.0  # when a change of the holdings alone may make a new version
        self._repaired: dict[IPAddress, float] = {}  # VIP -> when a conflict's repair started
        self._asking: set[tuple[IPAddress, str]] = set()  # unknown answers waiting for reports

    def _apply(self, *, everything: bool = False) -> None:
        """Hand the announcer what this node holds now (DataPlane's)."""
        raise NotImplementedError

    def _my_report(self) -> None:
        """Make this node's report current: a new version only when what it says changed
        (checked per message; steady state compares a few fields and a version number).

        A change of the holdings alone is paced: the next such version is made no sooner than
        REPORT_PACE times what making this one cost after it (~5 ms at 10,000 holdings, so
        50 ms; microseconds at a few hundred). While a node takes thousands of groups one by
        one, a version per message cost it most of its loop (peers parse each one too); a
        flag (leaving, fresh, cannot, MACs) still goes out at once."""
        lv, mine, macs = self.liveness, self.reports.mine, self.announcer.macs()
        if (
            mine is not None
            and mine.fresh == self.fresh
            and mine.leaving == lv.leaving
            and mine.cannot == lv.cannot
            and mine.macs == macs
            and (self._report_held == lv.held.version or time.monotonic() < self._report_due)
        ):
            return
        start = time.monotonic()
        self.reports.set_mine(lv.report(self.fresh, macs))
        self._report_held = lv.held.version
        self._report_due = start + (time.monotonic() - start) * (1 + REPORT_PACE)

    def _message(self, kind: Kind, seq: int, to: NodeName | None, **extra: object) -> Message:
        """A message to `to` carrying this node's report only if `to` lacks it."""
        self._my_report()
        report_id, seen, body = self.reports.to(to)
        report = self.reports.mine if body is not None else None
        return Message(kind, seq, self.me, report_id, seen, report, **extra)  # type: ignore[arg-type]

    def _out(self, msg: Message, addr: tuple[str, int]) -> None:
        if self.endpoint is not None:
            body = self.reports.mine_body if msg.report is not None else None
            self.endpoint.send(msg, addr, body)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % (1 << 31)
        return self._seq

    def _send(self, kind: Kind, node: NodeName, **extra: object) -> int | None:
        addr = self.plan.addresses.get(node)
        if addr is None or self.endpoint is None:
            return None
        seq = self._next_seq()
        self._out(self._message(kind, seq, node, **extra), (str(addr), self.bind[1]))
        return seq

    def _act(self, actions: Actions) -> None:
        """Send what a tick of the liveness state asked for."""
        for node in actions.probes:
            self._send(Kind.PROBE, node, beat=True)
        if actions.indirect:
            asyncio.get_running_loop().create_task(self._indirect(actions.indirect))
        checks: dict[NodeName, int] = {}
        for ip in actions.arp_probes:
            owner = self._owner_of(ip)
            if owner is None or checks.get(owner, 0) >= ARP_CHECKS_PER_OWNER:
                continue
            checks[owner] = checks.get(owner, 0) + 1
            asyncio.get_running_loop().create_task(self._arp_check(ip, owner))
        for node, keys in actions.handbacks:
            self._send(Kind.HANDBACK, node, keys=keys)

    async def _duplicate_checks(self) -> None:
        while True:
            await asyncio.sleep(DUPLICATE_CHECK_EVERY)
            for held in list(self._held.values()):
                for ip in held.ips:
                    try:
                        result = await self.announcer.probe(ip, held.interface)
                    except AnnounceError as err:
                        log.debug("duplicate_check_failed ip=%s error=%s", ip, err)
                        continue
                    for mac in sorted(result.answered_by):
                        self.conflict(ip, str(mac), held.interface)

    async def _indirect(self, asks: tuple[tuple[NodeName, NodeName], ...]) -> None:
        """Ask the other monitors to probe a suspect, CHECK_TRIES times over the check window,
        until one answer clears it."""
        for attempt in range(CHECK_TRIES):
            if attempt:
                await asyncio.sleep(CHECK_WAIT / CHECK_TRIES)
            for helper, target in asks:
                peer = self.liveness.peers.get(target)
                if peer is None or peer.suspect_since is None:
                    continue
                self._send(
                    Kind.INDIRECT, helper, target=target, addr=self.plan.addresses.get(target)
                )

    def _owner_of(self, ip: IPAddress) -> NodeName | None:
        group = self._group_of.get(ip)
        return group.ranking[0] if group is not None and group.ranking else None

    async def _arp_check(self, ip: IPAddress, owner: NodeName) -> None:
        """ARP-probe (or NS-probe) a VIP whose owner looks dead: any answer cancels the
        takeover."""
        try:
            result = await self.announcer.probe(ip, window=CHECK_WAIT * 0.75)
        except AnnounceError as err:
            log.debug("arp_probe_failed ip=%s error=%s", ip, err)
            return
        if result.answered:
            self.liveness.on_check(owner, time.monotonic())
            self._apply()

    def _on_message(self, msg: Message, src: tuple[str, int]) -> None:
        now = time.monotonic()
        try:
            report = self.reports.received(msg)
        except WireError:
            report = None  # counted as a miss; the next message carries the report again
        if report is not None:  # None: a version this node lacks (it restarted); the next has it
            self._learn(report)
        if msg.kind is Kind.PROBE:
            if report is not None:
                self.liveness.on_report(report, now, ack=False)
            if not self._answered_by_my_probe(msg):
                self._out(self._message(Kind.ACK, msg.seq, msg.node), src)
        elif msg.kind is Kind.ACK:
            if report is not None:
                self.liveness.on_report(report, now, ack=True)
            relay = self._relays.pop(msg.seq, None)
            if relay is not None:
                asker, ask_node, target = relay
                self._out(
                    self._message(Kind.INDIRECT_RESULT, msg.seq, ask_node, target=target, ok=True),
                    asker,
                )
        elif msg.kind is Kind.INDIRECT and msg.target is not None:
            self._relay(msg, src)
        elif msg.kind is Kind.INDIRECT_RESULT and msg.ok and msg.target is not None:
            self.liveness.on_check(msg.target, now)
        elif msg.kind is Kind.HANDBACK:
            self.liveness.on_handback(msg.keys, now)
        self._apply()

    def _answered_by_my_probe(self, msg: Message) -> bool:
        """Whether this node's own probe of the sender, every interval, answers `msg`: a
        monitor's regular probe without a new report, from a node this one monitors too. Any
        message counts as an answer (Liveness.on_report), so an ack would only double the
        datagrams between two nodes that monitor each other: at 10 or 30 nodes with 1,000
        groups almost every pair does (docs/performance.md, "Probe CPU"). An indirect check's
        probe, a leaving node's and one with a new report (a state change) are acked at once."""
        return (
            msg.beat
            and not msg.body
            and msg.node in self.liveness.peers
            and msg.node in self.plan.addresses
            and not self.liveness.leaving
        )

    def _learn(self, report: Report) -> None:
        """What a peer's report tells beyond liveness: its MACs, its API view, and, while this
        node leaves, which of its groups the peer took."""
        sender = report.node
        for mac in report.macs:
            self.speaker_macs[mac.lower()] = sender
        self.peer_fresh[sender] = report.fresh
        if self.liveness.leaving:
            self._taken_from_me.update(report.holding)

    def _relay(self, msg: Message, src: tuple[str, int]) -> None:
        """Probe `msg.target` for another monitor; its ack is forwarded as the result."""
        if msg.addr is None or self.endpoint is None or msg.target is None:
            return
        seq = self._next_seq()
        if len(self._relays) > 1024:  # answers that never came
            self._relays.clear()
        self._relays[seq] = (src, msg.node, msg.target)
        probe = self._message(Kind.PROBE, seq, msg.target)
        self._out(probe, (str(msg.addr), self.bind[1]))

    def conflict(self, ip: IPAddress, mac: str, iface: str, *, asked: bool = False) -> None:
        """The announcer saw `mac` answer for `ip`, which this node holds (data-plane loop). A
        MAC no report listed is foreign once every planned speaker has been heard from, or
        after the speakers not heard from yet were asked for their reports (`asked`)."""
        group = self._group_of.get(ip)
        peer = self._speaker_of(mac)
        if group is None:
            return
        if peer is None:
            if not asked and self._ask_unheard(ip, mac, iface):
                return
            self.on_foreign(ip, mac, iface)
            return
        fresh = self.peer_fresh.get(peer, False)
        if self.liveness.on_conflict(group.key, peer, fresh, self.fresh):
            log.info("yield_vip ip=%s to=%s", ip, peer)
            self._apply()
        elif group.key in self.liveness.held:
            self._repair(ip, peer)

    def _ask_unheard(self, ip: IPAddress, mac: str, iface: str) -> bool:
        """Probe the planned speakers whose report this node never received (their acks carry
        it, with their MACs) and judge `mac` again after UNHEARD_WAIT; False when there are
        none, or this answer is already waiting."""
        theirs = self.reports.theirs
        unheard = [n for n in self.plan.addresses if n != self.me and n not in theirs]
        if not unheard or (ip, mac) in self._asking:
            return bool(unheard)
        self._asking.add((ip, mac))
        for node in unheard:
            self._send(Kind.PROBE, node)
        log.info("unknown_responder ip=%s mac=%s asking=%s", ip, mac, ",".join(sorted(unheard)))

        def judge() -> None:
            self._asking.discard((ip, mac))
            if ip in self._group_of and self._group_of[ip].key in self.liveness.held:
                self.conflict(ip, mac, iface, asked=True)

        asyncio.get_running_loop().call_later(UNHEARD_WAIT, judge)
        return True

    def _repair(self, ip: IPAddress, peer: NodeName) -> None:
        """This node keeps `ip` against `peer`, whose frames may have turned clients to its MAC:
        a new burst turns them back (at most every REPAIR_EVERY per VIP)."""
        now = time.monotonic()
        if now - self._repaired.get(ip, -1e9) < REPAIR_EVERY:
            return
        if len(self._repaired) > 1024:
            self._repaired.clear()
        self._repaired[ip] = now
        log.info("keep_vip ip=%s against=%s", ip, peer)
        with contextlib.suppress(KeyError):  # one the announcer could not hold
            self.announcer.reannounce(ip)

    def _speaker_of(self, mac: str) -> NodeName | None:
        return self.speaker_macs.get(mac.lower())
