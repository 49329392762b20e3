"""L2 liveness, the pure half: which announcement groups this node holds, from the ranking,
probe results and peers' messages. Times come in as arguments. Called by speaker.dataplane (the
shell that sends and receives the UDP probes and drives the announcer); its constants and
types are lbctl.core.liveness_types.

Design and numbers: ../shared/reference/liveness.md and docs/speaker.md. In short:
- rank 1 of a group holds it; rank 2 probes rank 1 every 100 ms and takes over after 5 misses
  confirmed by an indirect probe through rank 3 and an ARP probe of the VIP; rank 3 takes over
  only when ranks 1 and 2 both fail;
- every takeover raises the group's epoch; a holder that hears a newer epoch for its group
  drops it (it was stalled or partitioned and counts as returning);
- the acting owner probes a returning higher-ranked node every 1 s and hands the group back
  after 5 s of answers; a leaving node (SIGTERM) is taken over at once;
- a monitor whose own loop lagged past the probe interval declares nobody dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lbctl.core.liveness_types import (
    ANSWER_SLACK,
    CHECK_WAIT,
    HANDBACK_AFTER,
    HOLDER_TIMEOUT,
    ISOLATED_AFTER,
    MISSES,
    PROBE_INTERVAL,
    STALL,
    STARTUP_HOLD,
    Actions,
    GroupView,
    Holder,
    Peer,
    Report,
    Verdict,
)
from lbctl.core.model import IPAddress, NodeName


class HeldMap(dict[IPAddress, int]):
    """The groups this node holds -> the epoch it holds each at. A dict that counts its changes
    (`version`) and keeps the keys changed since the shell last took them (take_changed): at
    10,000 groups, comparing or redoing every group per message or plan was ~0.1 s of the
    data-plane loop (docs/performance.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self._changed: set[IPAddress] = set()

    def __setitem__(self, key: IPAddress, epoch: int) -> None:
        if self.get(key) != epoch:
            super().__setitem__(key, epoch)
            self._note(key)

    def __delitem__(self, key: IPAddress) -> None:
        super().__delitem__(key)
        self._note(key)

    def pop(self, key: IPAddress, default: int | None = None) -> int | None:  # type: ignore[override]
        if key not in self:
            return default
        self._note(key)
        return super().pop(key)

    def clear(self) -> None:
        if self:
            self.version += 1
            self._changed.update(self)
        super().clear()

    def _note(self, key: IPAddress) -> None:
        self.version += 1
        self._changed.add(key)

    def take_changed(self) -> set[IPAddress]:
        """The keys taken, dropped or re-taken at another epoch since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def update(self, *_: object, **__: object) -> None:
        raise TypeError("HeldMap changes one key at a time (its changes are tracked)")

    setdefault = popitem = update  # type: ignore[assignment]


class Liveness:
    """One speaker's view. Not thread-safe: the shell calls it from its data-plane loop.

    A plan's change (update_groups), a peer's report and a hand-back decide only the groups
    they touch; a peer declared dead or alive, isolation, a stall or a whole plan decide all."""

    def __init__(self, me: NodeName, now: float) -> None:
        self.me = me
        self.started = now
        self.groups: dict[IPAddress, GroupView] = {}
        self.peers: dict[NodeName, Peer] = {}
        self.holders: dict[IPAddress, Holder] = {}  # newest other holder heard of, per group
        self.heard: dict[NodeName, float] = {}  # when each node's last message came
        self._last_report: dict[NodeName, Report] = {}  # unchanged reports skip the decision
        self.held = HeldMap()  # group key -> epoch this node holds it at
        self.cannot: frozenset[IPAddress] = frozenset()
        self.handed_back: set[IPAddress] = set()
        self.leaving = False
        self.lagging = False
        self.fresh = True  # this node's API view (the shell keeps it current)
        self.last_contact = now  # a peer's probe or ack
        self.last_api_ok = now
        self.verdicts: dict[IPAddress, Verdict] = {}
        self._waiting: set[IPAddress] = set()  # groups whose verdict is STARTING or RETURNING
        self._acting: set[IPAddress] = set()  # groups whose verdict is TOOK_OVER
        self._watch_refs: dict[NodeName, int] = {}  # node above this one -> groups watching it
        self._was_isolated = False

    # -- inputs ------------------------------------------------------------------------------

    def set_groups(self, groups: Iterable[GroupView], now: float) -> None:
        """The whole plan: every group decided again."""
        self.groups = {g.key: g for g in groups}
        for key in [k for k in self.held if k not in self.groups]:
            del self.held[key]
        self._forget([k for k in self.verdicts if k not in self.groups])
        self._watch_refs = {}
        for group in self.groups.values():
            for node in self._above(group):
                self._watch_refs[node] = self._watch_refs.get(node, 0) + 1
        self._refresh_peers(now)
        self._decide(now)

    def update_groups(self, changes: Mapping[IPAddress, GroupView | None], now: float) -> None:
        """A plan's difference: each key's new group, or None when it is gone. Decides those
        groups and the ones waiting on time, as set_groups with the whole plan would
        (tests/unit/test_liveness_incremental.py)."""
        for key, group in changes.items():
            old = self.groups.pop(key, None)
            if old is not None:
                for node in self._above(old):
                    left = self._watch_refs[node] - 1
                    if left:
                        self._watch_refs[node] = left
                    else:
                        del self._watch_refs[node]
            if group is None:
                self.held.pop(key)
                self._forget((key,))
                continue
            self.groups[key] = group
            for node in self._above(group):
                self._watch_refs[node] = self._watch_refs.get(node, 0) + 1
        self._refresh_peers(now)
        if self.isolated(now) != self._was_isolated:
            self._decide(now)  # as set_groups would; the next tick logs the flip
            return
        self._decide(now, {k for k in changes if k in self.groups} | self._waiting)

    def _forget(self, keys: Iterable[IPAddress]) -> None:
        for key in keys:
            self.verdicts.pop(key, None)
            self.handed_back.discard(key)
            self._waiting.discard(key)
            self._acting.discard(key)

    def _above(self, group: GroupView) -> tuple[NodeName, ...]:
        """The nodes this one watches for `group`: those above it where it is rank 2 or 3."""
        ranking = group.ranking
        if self.me in ranking[1:3]:
            return ranking[: ranking.index(self.me)]
        return ()

    def _refresh_peers(self, now: float) -> None:
        watched = self._watched()
        for name in [n for n in self.peers if n not in watched]:
            del self.peers[name]
        for name in watched:
            self.peers.setdefault(name, Peer(last_probe=now - PROBE_INTERVAL, heard_at=now))

    def set_cannot_carry(self, keys: frozenset[IPAddress], now: float) -> None:
        changed = keys ^ self.cannot
        self.cannot = keys
        self._decide(now, [k for k in changed if k in self.groups])

    def api_ok(self, now: float) -> None:
        self.last_api_ok = now

    def on_report(self, report: Report, now: float, *, ack: bool) -> None:
        """A peer's probe or ack: learn what it holds; any message from a watched node proves
        it alive. Decides again only when something changed (steady state costs no decision)."""
        self.last_contact = now
        self.heard[report.node] = now
        peer = self.peers.get(report.node)
        if self._last_report.get(report.node) is report:  # the very same report object again
            if peer is not None:
                was_dead = peer.dead
                self._answered(peer, now)
                peer.dead = report.leaving
                if was_dead != peer.dead:
                    self._decide(now)
            return
        self._last_report[report.node] = report
        touched: list[IPAddress] = []  # groups whose holders changed: decided again
        for key in [k for k, h in self.holders.items() if h.node == report.node]:
            if key not in report.holding:
                del self.holders[key]  # it let go
                touched.append(key)
        for key, epoch in report.holding.items():
            known = self.holders.get(key)
            newer = known is None or (epoch >= known.epoch and known != Holder(report.node, epoch))
            if newer:
                self.holders[key] = Holder(report.node, epoch)
                touched.append(key)
            mine = self.held.get(key)
            if mine is not None and (
                epoch > mine  # a newer holder: this node was stalled or partitioned
                or (epoch == mine and self._yields(key, report.node, report.fresh, self.fresh))
            ):  # the same epoch: both took it, neither hearing of the other in time
                del self.held[key]
                touched.append(key)
        everything = False  # a peer's state changed: every group it ranks in is decided again
        if report.node not in self.peers and any(
            h.node == report.node for h in self.holders.values()
        ):
            self._refresh_peers(now)  # rank 1 watches whoever holds its group meanwhile
            everything = True
        peer = self.peers.get(report.node)  # _refresh_peers may have added it
        if peer is not None:
            before = (peer.dead, peer.report.cannot if peer.report else None)
            peer.report = report
            self._answered(peer, now)
            if report.leaving:
                peer.dead = True
            everything |= before != (peer.dead, report.cannot)
        if everything:
            self._decide(now)
        elif touched:
            self._decide(now, [k for k in touched if k in self.groups])

    def on_check(self, node: NodeName, now: float) -> None:
        """An indirect probe or an ARP probe answered while `node` is suspect: not dead."""
        peer = self.peers.get(node)
        if peer is not None and peer.suspect_since is not None:
            peer.cleared = True
            self._answered(peer, now)
            self._decide(now)

    def on_handback(self, keys: Iterable[IPAddress], now: float) -> None:
        """The acting owner gives rank-1 groups back to this node."""
        given = [k for k in keys if k in self.groups and self._rank(k) == 1]
        self.handed_back.update(given)
        self._decide(now, given)

    def on_lag(self, lag: float, now: float) -> None:
        """Own event-loop lag. Past the probe interval a monitor declares nobody dead (its own
        slowness, not the peer's); past STALL this node drops what it holds and returns."""
        self.lagging = lag > PROBE_INTERVAL
        if lag > STALL:
            self.held.clear()
            for peer in self.peers.values():
                peer.misses, peer.heard_at = 0, now
            self.started = now  # listen for holders again before taking anything
            self._decide(now)

    def on_conflict(self, key: IPAddress, node: NodeName, fresh: bool, my_fresh: bool) -> bool:
        """Another speaker (`node`, known by its MAC) answers for a group this node holds.
        Returns True when this node yields: a stale one yields to a fresh one, else the higher
        rank keeps it."""
        if key not in self.held:
            return False
        yields = self._yields(key, node, fresh, my_fresh)
        if yields:
            del self.held[key]
            self.verdicts[key] = Verdict.NOT_OWNER
        return yields

    def _yields(self, key: IPAddress, node: NodeName, fresh: bool, my_fresh: bool) -> bool:
        """Whether this node lets `node` keep a group both hold: a stale one yields to a fresh
        one, else the higher rank keeps it (the conflict rule; both sides compute it alone)."""
        if my_fresh != fresh:
            return fresh
        ranking = self.groups[key].ranking if key in self.groups else ()
        mine = ranking.index(self.me) if self.me in ranking else len(ranking)
        theirs = ranking.index(node) if node in ranking else len(ranking)
        return theirs < mine

    def leave(self) -> tuple[NodeName, ...]:
        """SIGTERM: reports say leaving from now on; returns the monitors to tell at once: those
        of the groups it holds and of the rank-1 groups it has not taken yet (starting, or just
        planned), which would otherwise wait for missed probes."""
        self.leaving = True
        monitors = {
            n
            for k, g in self.groups.items()
            if k in self.held or g.ranking[:1] == (self.me,)
            for n in g.ranking[1:3]
            if n != self.me
        }
        return tuple(sorted(monitors))

    def release_all(self) -> None:
        """After leave() and the monitors' takeover: hold nothing any more."""
        self.held.clear()
        for key in self.groups:
            self.verdicts[key] = Verdict.LEAVING
        self._waiting.clear()
        self._acting.clear()

    # -- outputs -----------------------------------------------------------------------------

    def report(self, fresh: bool, macs: tuple[str, ...] = ()) -> Report:
        return Report(self.me, fresh, self.leaving, macs, self.cannot, dict(self.held))

    def holding(self) -> dict[IPAddress, GroupView]:
        return {k: self.groups[k] for k in self.held if k in self.groups}

    def tick(self, now: float) -> Actions:
        """Count misses, start and finish checks, decide; return what to send."""
        probes: list[NodeName] = []
        indirect: list[tuple[NodeName, NodeName]] = []
        arp: list[IPAddress] = []
        changed = self._isolation_flipped(now)
        for name, peer in self.peers.items():
            # the same float tolerance as the probe interval's: the shell ticks on exact
            # multiples of the interval, and 0.3 - 0.1 is not quite 0.2 in floating point
            if peer.suspect_since is not None and now - peer.suspect_since >= CHECK_WAIT - 1e-6:
                peer.dead, peer.suspect_since = not peer.cleared, None
                changed |= peer.dead
            if now - peer.last_probe < PROBE_INTERVAL - 1e-6:
                continue
            answered = peer.heard_at >= peer.last_probe - ANSWER_SLACK
            if not answered and not self.lagging:
                peer.misses += 1
                peer.answering_since = None
            peer.last_probe = now
            probes.append(name)
            if peer.misses >= MISSES and peer.suspect_since is None and not peer.dead:
                peer.suspect_since, peer.cleared = now, False
                indirect += [(h, name) for h in self._helpers(name)]
                arp += [
                    ip for g in self.groups.values() if g.ranking[:1] == (name,) for ip in g.ips
                ]
        if changed:
            self._decide(now)
        elif self._waiting:  # a start-up or a return under way: verdicts that time may change
            self._decide(now, list(self._waiting))
        return Actions(tuple(probes), tuple(indirect), tuple(arp), self._handbacks(now))

    def _isolation_flipped(self, now: float) -> bool:
        """Whether isolation started or ended since the last tick."""
        isolated = self.isolated(now)
        flipped, self._was_isolated = isolated != self._was_isolated, isolated
        return flipped

    # -- the decision ------------------------------------------------------------------------

    def _rank(self, key: IPAddress) -> int | None:
        ranking = self.groups[key].ranking
        return ranking.index(self.me) + 1 if self.me in ranking else None

    def _watched(self) -> set[NodeName]:
        """The nodes above this one where it is rank 2 or 3 (counted as groups change), and,
        where it is rank 1, another node that holds the group meanwhile: a returning owner
        takes over at once if the acting owner dies before the hand-back."""
        watched = set(self._watch_refs)
        for key, holder in self.holders.items():
            group = self.groups.get(key)
            if (
                group is not None
                and group.ranking[:1] == (self.me,)
                and holder.node in group.ranking[1:]
            ):
                watched.add(holder.node)
        return watched

    def _answered(self, peer: Peer, now: float) -> None:
        if peer.answering_since is None or peer.dead:
            peer.answering_since = now
        peer.heard_at, peer.misses = now, 0
        peer.dead, peer.suspect_since = False, None

    def _failed(self, node: NodeName, key: IPAddress) -> bool:
        peer = self.peers.get(node)
        if peer is None:
            return False
        return peer.dead or (peer.report is not None and key in peer.report.cannot)

    def _helpers(self, node: NodeName) -> list[NodeName]:
        """The other monitors of `node`, to ask for an indirect probe."""
        helpers = {
            n
            for g in self.groups.values()
            if g.ranking[:1] == (node,)
            for n in g.ranking[1:3]
            if n not in (self.me, node)
        }
        return sorted(h for h in helpers if not (h in self.peers and self.peers[h].dead))

    def _take(self, key: IPAddress) -> None:
        known = self.holders.get(key)
        self.held[key] = (known.epoch if known else 0) + 1

    def isolated(self, now: float) -> bool:
        """Neither a peer's word nor an API success for ISOLATED_AFTER: this node must not keep
        answering (a node cut off from everything)."""
        if not self.heard:
            return False  # no other speaker exists (or ever spoke): nobody else could take over
        quiet = now - max(self.last_contact, self.last_api_ok)
        return quiet >= ISOLATED_AFTER

    def _decide(self, now: float, keys: Iterable[IPAddress] | None = None) -> None:
        """Decide `keys` (groups this node has), or every group. The groups waiting on time
        and the ones held for another node are kept as sets here, not recounted over ten
        thousand verdicts ten times a second."""
        isolated = self.isolated(now)
        if keys is None:
            keys = self.groups
            self._waiting, self._acting = set(), set()
        for key in keys:
            verdict = self._decide_group(key, now, isolated=isolated)
            self.verdicts[key] = verdict
            if verdict is Verdict.TOOK_OVER:
                self._acting.add(key)
            else:
                self._acting.discard(key)
                if verdict is not Verdict.OWNER:
                    self.held.pop(key)
            if verdict is Verdict.STARTING or verdict is Verdict.RETURNING:
                self._waiting.add(key)
            else:
                self._waiting.discard(key)

    def _decide_group(self, key: IPAddress, now: float, *, isolated: bool) -> Verdict:
        rank = self._rank(key)
        if rank is None:
            return Verdict.NOT_ELIGIBLE
        if key in self.cannot:
            return Verdict.CANNOT_CARRY
        if self.leaving:  # keep answering until the monitors took over; then release_all()
            return self.verdicts.get(key, Verdict.LEAVING) if key in self.held else Verdict.LEAVING
        if isolated:
            return Verdict.ISOLATED
        if rank == 1:
            return self._decide_owner(key, now)
        if key in self.held:
            return Verdict.TOOK_OVER  # until the hand-back, or a newer epoch, takes it away
        above = self.groups[key].ranking[: rank - 1]
        if rank <= 3 and all(self._failed(n, key) for n in above):
            self._take(key)
            return Verdict.TOOK_OVER
        return Verdict.NOT_OWNER

    def _decide_owner(self, key: IPAddress, now: float) -> Verdict:
        if key in self.held:
            return Verdict.OWNER
        if now - self.started < STARTUP_HOLD:
            return Verdict.STARTING
        other = self.holders.get(key)
        if (
            other is not None
            and other.node in self.groups[key].ranking[1:]  # an eligible acting owner
            and now - self.heard.get(other.node, -1e9) < HOLDER_TIMEOUT
            and not self._failed(other.node, key)
            and key not in self.handed_back
        ):
            return Verdict.RETURNING
        self.handed_back.discard(key)
        self._take(key)
        return Verdict.OWNER

    def _handbacks(self, now: float) -> tuple[tuple[NodeName, tuple[IPAddress, ...]], ...]:
        """Groups this node holds for a rank-1 node that has answered for HANDBACK_AFTER."""
        back = {
            name
            for name, peer in self.peers.items()
            if peer.answering_since is not None and now - peer.answering_since >= HANDBACK_AFTER
        }
        out: dict[NodeName, list[IPAddress]] = {}
        if not back:  # every tick: no group is visited while no rank-1 node came back
            return ()
        for key in self._acting:
            if key not in self.held:
                continue  # dropped since it was decided (a newer epoch, a conflict, a stall)
            owner = self.groups[key].ranking[0]
            if owner in back and owner != self.me and not self._failed(owner, key):
                out.setdefault(owner, []).append(key)
        return tuple((n, tuple(sorted(ks, key=str))) for n, ks in sorted(out.items()))
