"""The L2 speaker end to end on the bed: the real control plane, the controller and one
`lbctl-speaker` per node under its ServiceAccount. The client's own kernel resolves each VIP by
ARP/NDP; traffic goes client -> VIP -> the owner's kube-proxy -> a backend, with no stand-in on
the path. Faults: signals to a speaker, links set down, nftables loss and drops, a node's API
cut, the whole API stopped, stopped kubelets, taints. An observer asks for each VIP every 100 ms
and counts the MACs that answer."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apps
import pytest
from kubernetes import client, config

from lbctl.core import election
from lbctl.core.model import NodeName
from lbctl.lab import agents, netfaults, nsutil
from lbctl.lab.bed import Bed
from lbctl.lab.daemon import lab_config_text
from lbctl.lab.l2probe import VipObserver, VipResponder
from lbctl.lab.procs import WaitTimeout, wait_for

NS = "default"
CONDITION = "lbctl.io/AnnouncedL2"
SPEAKER_USER = "system:serviceaccount:lbctl-system:lbctl-speaker"


@dataclass
class L2Bed:
    bed: Bed
    api: client.ApiClient
    speakers: dict[str, agents.Agent] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def node(self, name: str) -> Any:
        return self.bed.topology.node(name)

    def mac(self, node: str) -> str:
        return str(self.node(node).host.mac)

    def netns(self, node: str) -> str:
        return str(self.node(node).netns)

    def start_speaker(self, node: str) -> None:
        self.speakers[node] = agents.start_speaker(
            self.bed.topology, self.bed.control, self.node(node), self.bed.node_api_url
        )

    def restart_speaker(self, node: str) -> None:
        """After a kill: reap the old process and start a fresh one (wait for its /readyz)."""
        with contextlib.suppress(Exception):
            self.speakers[node].proc.wait(10)
        self.start_speaker(node)

    def signal_speaker(self, node: str, sig: signal.Signals) -> None:
        os.kill(self.speakers[node].proc.pid, sig)

    def metric(self, node: str, prefix: str) -> float:
        """The sum of the samples of the node's speaker whose line starts with `prefix`."""
        _, text = agents.scrape(self.netns(node), agents.NODE_METRICS)
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))  # fmt: skip

    def announcing(self, node: str, vip: str) -> bool:
        return self.metric(node, f'lbctl_l2_announced{{interface="eth0",ip="{vip}"}}') > 0


@pytest.fixture(scope="module")
def l2(bed: Bed) -> Iterator[L2Bed]:
    control = bed.control
    agents.apply_rbac(control)
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lbctl-config", "namespace": "lbctl-system"},
        "data": {"config.yaml": lab_config_text()},
    }  # fmt: skip
    with config.new_client_from_config(str(bed.kubeconfig)) as api:
        client.CoreV1Api(api).create_namespaced_config_map("lbctl-system", configmap)
        agents.start_controller(bed.topology, control)
        the_bed = L2Bed(bed, api)
        for node in bed.topology.nodes:
            the_bed.start_speaker(node.name)
        yield the_bed


@pytest.fixture
def app(l2: L2Bed) -> Iterator[Callable[..., str]]:
    """Make a Deployment and a LoadBalancer Service of the same name; returns its first IP.
    Both are deleted after the test (the nodes hold six pods each)."""
    made: list[str] = []

    def make(name: str, replicas: int = 1, node: str | None = None, **spec: Any) -> str:
        apps.deploy(l2.api, name, replicas, node)
        made.append(name)
        return expose(l2, name, **spec)

    yield make
    ips: set[str] = set()
    for name in made:
        with contextlib.suppress(client.exceptions.ApiException):
            ips.update(ingress(l2, name))
            l2.core.delete_namespaced_service(name, NS)
        with contextlib.suppress(client.exceptions.ApiException):
            client.AppsV1Api(l2.api).delete_namespaced_deployment(name, NS)
    # The next test's Service gets the same IP at once: wait for every running speaker to
    # withdraw it, so no answer from this test's plan reaches the next one.
    wait_for(lambda: not any(l2.announcing(node, ip) for node, agent in l2.speakers.items()
                             if agent.proc.poll() is None for ip in ips),
             20.0, f"{sorted(ips)} withdrawn after the test")  # fmt: skip


def expose(l2: L2Bed, name: str, **spec: Any) -> str:
    apps.create_service(l2.api, name, **spec)
    ips: list[str] = wait_for(lambda: ingress(l2, name), 20.0, f"an IP on {name}")
    return ips[0]


def ingress(l2: L2Bed, name: str) -> list[str]:
    return apps.ingress(l2.api, name)


def ranking(l2: L2Bed, vip: str, without: tuple[str, ...] = ()) -> list[str]:
    names = [n.name for n in l2.bed.topology.nodes if n.name not in without]
    ordered = election.rank((NodeName(n) for n in names), ipaddress.ip_address(vip))
    return [str(n) for n in ordered]


def condition(l2: L2Bed, name: str) -> dict[str, Any] | None:
    return apps.condition(l2.api, name, CONDITION)


def ask(l2: L2Bed, vip: str, timeout: float = 1.0) -> dict[str, str]:
    """One TCP exchange from the client namespace (its kernel resolves the VIP itself)."""
    return apps.ask(l2.bed, vip, timeout=timeout)


def served(l2: L2Bed, vip: str, timeout: float = 15.0) -> dict[str, str]:
    try:
        answer: dict[str, str] = wait_for(lambda: ask(l2, vip), timeout, f"an answer from {vip}")
    except WaitTimeout as err:
        raise AssertionError(f"{err}\n{diagnose(l2, vip)}") from None
    return answer


def diagnose(l2: L2Bed, vip: str) -> str:
    """What the bed knows about `vip`, for a failure message."""
    lines = [f"client neigh: {nsutil.ip('neigh', 'show', vip, netns=l2.bed.topology.client.netns)}"]
    for svc in l2.core.list_namespaced_service(NS).items:
        lb = svc.status.load_balancer
        if lb and any(e.ip == vip for e in lb.ingress or []):
            conds = [(c.type, c.status, c.message) for c in svc.status.conditions or []]
            lines.append(f"service {svc.metadata.name}: {conds}")
            slices = client.DiscoveryV1Api(l2.api).list_namespaced_endpoint_slice(
                NS, label_selector=f"kubernetes.io/service-name={svc.metadata.name}"
            )
            eps = [
                (e.node_name, e.conditions.ready) for s in slices.items for e in s.endpoints or []
            ]
            lines.append(f"  endpoints: {eps}")
    for node in l2.speakers:
        announcing = l2.announcing(node, vip)
        lines.append(f"{node}: announcing={announcing}")
        if announcing:
            rules = nsutil.ip_netns_exec(l2.netns(node), "nft", "list", "ruleset", check=False)
            lines += [
                f"  nft: {r.strip()}" for r in rules.splitlines() if vip in r or "198.51" in r
            ]
            log = l2.bed.topology.run_dir / "logs" / f"kube-proxy-{node}.log"
            lines += [f"  kube-proxy: {r}" for r in log.read_text().splitlines()[-8:]]
    return "\n".join(lines)


def client_mac(l2: L2Bed, vip: str) -> str | None:
    """The MAC the client's neighbour table holds for `vip` (None: no usable entry)."""
    words = nsutil.ip("neigh", "show", vip, netns=l2.bed.topology.client.netns).split()
    if "lladdr" not in words or "FAILED" in words:
        return None
    return words[words.index("lladdr") + 1]


def moved_to(l2: L2Bed, vip: str, node: str, timeout: float) -> float:
    """Seconds until the client's neighbour entry for `vip` points at `node` (the client's
    kernel updates the entry it has from the new owner's gratuitous ARP)."""
    start = time.monotonic()
    wait_for(lambda: client_mac(l2, vip) == l2.mac(node), timeout, f"{vip} on {node}",
             interval=0.01)  # fmt: skip
    return time.monotonic() - start


@contextlib.contextmanager
def observed(l2: L2Bed, vip: str) -> Iterator[VipObserver]:
    with l2.bed.topology.observe(vip) as observer:
        observer.wait_for(lambda ticks: len(ticks) >= 3, timeout=3)
        yield observer


def single_owner_throughout(observer: VipObserver, grace: float = 1.2) -> None:
    """At most one MAC answered per 100 ms window, except within one GARP interval of a change
    of owner."""
    ticks = observer.ticks()
    crowded = [t.at for t in ticks if len(t.macs) > 1]
    changes = [b.at for a, b in itertools.pairwise(ticks) if a.macs and b.macs != a.macs]
    stray = [at for at in crowded if not any(abs(at - c) <= grace for c in changes)]
    assert stray == [], f"two MACs answered at {stray}"


# -- basics --------------------------------------------------------------------------------------


def test_an_assigned_ip_resolves_to_its_owner_and_reaches_a_backend(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("web", replicas=3)
    owner = ranking(l2, vip)[0]
    assert served(l2, vip)["pod"].startswith("web-")
    assert client_mac(l2, vip) == l2.mac(owner)
    cond = wait_for(
        lambda: (c := condition(l2, "web")) and c["status"] == "True" and c, 10.0, "AnnouncedL2"
    )
    assert cond["message"] == f"announced {vip} by node {owner} on eth0"
    with observed(l2, vip) as observer:
        observer.wait_for(lambda ticks: len(ticks) >= 10, timeout=3)
    assert observer.distinct_macs() == {l2.mac(owner)}, "exactly one node answers"
    assert l2.announcing(owner, vip)
    assert not any(l2.announcing(n, vip) for n in ranking(l2, vip)[1:])


def test_ipv6_resolves_through_ndp(l2: L2Bed, app: Callable[..., str]) -> None:
    app("dual", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    ips = ingress(l2, "dual")
    vip6 = next(ip for ip in ips if ":" in ip)
    owner = ranking(l2, ips[0])[0]  # one owner for all of a Service's IPs: the first IP's

    def resolved() -> bool:
        nsutil.ip_netns_exec(l2.bed.topology.client.netns, "ping", "-6", "-c", "1", "-W", "0.3",
                             vip6, check=False)  # fmt: skip
        return client_mac(l2, vip6) == l2.mac(owner)

    wait_for(resolved, 10.0, f"{vip6} resolved to {owner} by NDP")
    with observed(l2, vip6) as observer:
        observer.wait_for(lambda ticks: len(ticks) >= 5, timeout=3)
    assert observer.distinct_macs() == {l2.mac(owner)}


def test_local_policy_follows_the_node_with_the_local_endpoint(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    first, second = ranking(l2, "192.0.2.250")[1:]  # any two nodes
    vip = app("local", node=first, externalTrafficPolicy="Local")
    answer = served(l2, vip)
    assert client_mac(l2, vip) == l2.mac(first)
    assert answer["client"].rsplit(":", 1)[0] == str(l2.bed.topology.client.host.addr4)
    apps = client.AppsV1Api(l2.api)
    patch = {"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": second}}}}}
    with observed(l2, vip) as observer:
        apps.patch_namespaced_deployment("local", NS, patch)
        moved_to(l2, vip, second, 30.0)
        assert served(l2, vip)["node"] == second
    # The IP moved only once the new pod was ready: no window answered by a node with none.
    assert observer.distinct_macs() <= {l2.mac(first), l2.mac(second)}
    single_owner_throughout(observer)


# -- failures of the owner -------------------------------------------------------------------------


def test_a_killed_owner_is_replaced_by_rank_two_and_gets_its_ip_back(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("kill")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    with observed(l2, vip) as observer:
        l2.signal_speaker(first, signal.SIGKILL)
        try:
            took = moved_to(l2, vip, second, 3.0)
            assert took < 1.5, f"took over {took:.2f} s after the kill"
            assert served(l2, vip, 5.0)
        finally:
            l2.restart_speaker(first)
        moved_to(l2, vip, first, 12.0)  # hand-back after 5 s of answers
        assert served(l2, vip, 5.0)
    single_owner_throughout(observer)


def test_sigterm_hands_over_before_the_speaker_stops(l2: L2Bed, app: Callable[..., str]) -> None:
    vip = app("term")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    l2.signal_speaker(first, signal.SIGTERM)
    try:
        took = moved_to(l2, vip, second, 2.0)
        assert took < 1.0, f"handed over {took:.2f} s after SIGTERM"
        assert l2.speakers[first].proc.wait(10) == 0
    finally:
        l2.restart_speaker(first)
    moved_to(l2, vip, first, 12.0)


def test_the_owners_link_down_moves_the_ip(l2: L2Bed, app: Callable[..., str]) -> None:
    vip = app("link", replicas=3)  # a backend stays reachable whichever node is cut off
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    l2.bed.topology.set_link(l2.node(first), up=False)
    try:
        took = moved_to(l2, vip, second, 3.0)
        assert took < 1.5, f"took over {took:.2f} s after the link went down"
        assert served(l2, vip, 5.0)
    finally:
        l2.bed.topology.set_link(l2.node(first), up=True)
    moved_to(l2, vip, first, 15.0)


def test_a_stopped_kubelet_makes_the_ip_move(l2: L2Bed, app: Callable[..., str]) -> None:
    kubelet = l2.bed.kubelet
    assert kubelet is not None
    vip = app("notready", replicas=2)
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    kubelet.stop_node(first)
    try:
        moved_to(l2, vip, second, 20.0)  # the node lifecycle grace period is 5 s
        cond = wait_for(lambda: (c := condition(l2, "notready")) and second in c["message"] and c,
                        5.0, "AnnouncedL2 names the new owner")  # fmt: skip
        assert cond["status"] == "True"
    finally:
        kubelet.start_node(first)
    moved_to(l2, vip, first, 30.0)


def test_an_out_of_service_taint_makes_the_ip_move(l2: L2Bed, app: Callable[..., str]) -> None:
    vip = app("oos")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    taint = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
             "effect": "NoSchedule"}  # fmt: skip
    l2.core.patch_node(first, {"spec": {"taints": [taint]}})
    try:
        moved_to(l2, vip, second, 5.0)
    finally:
        l2.core.patch_node(first, {"spec": {"taints": None}})
    moved_to(l2, vip, first, 12.0)


@pytest.mark.parametrize(
    ("stop", "takeovers"),
    [pytest.param(0.3, 0, id="300ms-no-takeover"),
     pytest.param(3.0, 2, id="3s-one-takeover-and-a-hand-back")],
)  # fmt: skip
def test_a_stalled_owner(l2: L2Bed, app: Callable[..., str], stop: float, takeovers: int) -> None:
    vip = app(f"stall{int(stop * 10)}")
    first = ranking(l2, vip)[0]
    served(l2, vip)
    with observed(l2, vip) as observer:
        l2.signal_speaker(first, signal.SIGSTOP)
        time.sleep(stop)  # the fault itself: the speaker is stopped this long
        l2.signal_speaker(first, signal.SIGCONT)
        settle = time.monotonic() + (1.5 if not takeovers else 9.0)
        wait_for(lambda: time.monotonic() > settle and client_mac(l2, vip) == l2.mac(first),
                 12.0, "the owner back")  # fmt: skip
    owners = [next(iter(t.macs)) for t in observer.ticks() if len(t.macs) == 1]
    changes = sum(a != b for a, b in itertools.pairwise(owners))
    assert changes == takeovers
    single_owner_throughout(observer)


def test_a_stalled_monitor_causes_no_takeover(l2: L2Bed, app: Callable[..., str]) -> None:
    vip = app("monstall")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    with observed(l2, vip) as observer:
        l2.signal_speaker(second, signal.SIGSTOP)
        time.sleep(1.0)  # the fault itself
        l2.signal_speaker(second, signal.SIGCONT)
        settle = time.monotonic() + 2.0
        wait_for(lambda: time.monotonic() > settle, 3.0, "two quiet seconds")
    assert observer.distinct_macs() == {l2.mac(first)}


# -- lossy and partial networks -----------------------------------------------------------------


def test_one_way_loss_from_owner_to_rank_two_causes_no_takeover(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("oneway")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    to_second = f"ip daddr {l2.node(second).host.addr4}"
    with observed(l2, vip) as observer:
        netfaults.drop(l2.netns(first), to_second)
        try:
            quiet = time.monotonic() + 5.0
            wait_for(lambda: time.monotonic() > quiet, 6.0, "five seconds of one-way loss")
        finally:
            netfaults.clear(l2.netns(first), netfaults.DROP)
    assert observer.distinct_macs() == {l2.mac(first)}, "the indirect probe kept it"


def test_probes_to_the_owner_dropped_but_arp_answered_causes_no_takeover(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("udpdrop")
    first = ranking(l2, vip)[0]
    served(l2, vip)
    with observed(l2, vip) as observer:
        netfaults.drop(l2.netns(first), f"udp dport {agents.PROBE_PORT}", hook="input")
        try:
            quiet = time.monotonic() + 5.0
            wait_for(lambda: time.monotonic() > quiet, 6.0, "five seconds without probes")
        finally:
            netfaults.clear(l2.netns(first), netfaults.DROP)
    assert observer.distinct_macs() == {l2.mac(first)}, "the ARP probe kept it"


def test_twenty_percent_loss_on_every_node_for_a_minute_causes_no_takeover(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("lossy")
    first = ranking(l2, vip)[0]
    served(l2, vip)
    changes = {n: l2.metric(n, "lbctl_l2_ownership_changes_total") for n in l2.speakers}
    for node in l2.speakers:
        netfaults.loss(l2.netns(node), "eth0", 20)
    try:
        quiet = time.monotonic() + 60.0
        wait_for(lambda: time.monotonic() > quiet, 61.0, "a minute of 20 % loss", interval=1.0)
    finally:
        for node in l2.speakers:
            netfaults.clear(l2.netns(node), netfaults.LOSS)
    after = {n: l2.metric(n, "lbctl_l2_ownership_changes_total") for n in l2.speakers}
    assert after == changes, "no speaker took or gave up an IP"
    assert l2.announcing(first, vip)


# -- the API ---------------------------------------------------------------------------------------


def speaker_writes(l2: L2Bed, since: float) -> list[str]:
    found = []
    for line in l2.bed.control.audit_log.read_text().splitlines():
        if SPEAKER_USER not in line:
            continue
        entry = json.loads(line)
        at = time.mktime(time.strptime(entry["stageTimestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
        if entry["verb"] in ("create", "update", "patch", "delete") and at >= since:
            found.append(f"{entry['verb']} {entry['requestURI']}")
    return found


def test_speakers_write_only_the_condition_and_nothing_while_quiet(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("quiet")
    served(l2, vip)
    wait_for(lambda: condition(l2, "quiet"), 10.0, "AnnouncedL2 written")
    all_writes = speaker_writes(l2, 0)
    assert all(w.endswith("/status") or "/events" in w for w in all_writes), all_writes
    statuses = [e for e in all_writes if e.startswith("patch") and "/services/" in e]
    assert statuses, "the condition was written by a speaker"
    start = time.time() + 1  # audit timestamps have whole seconds
    wait_for(lambda: time.time() > start + 30, 32.0, "30 quiet seconds", interval=1.0)
    assert speaker_writes(l2, start) == []


def test_a_node_cut_off_from_the_api_keeps_announcing_while_it_reaches_its_peers(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("apicut")
    first = ranking(l2, vip)[0]
    served(l2, vip)
    netfaults.cut_api(l2.netns(first))
    try:
        quiet = time.monotonic() + 10.0
        wait_for(lambda: time.monotonic() > quiet, 11.0, "ten seconds without the API")
        assert l2.announcing(first, vip) and client_mac(l2, vip) == l2.mac(first)
        assert l2.metric(first, "lbctl_api_fresh") in (0.0, 1.0)
    finally:
        netfaults.clear(l2.netns(first), netfaults.CUT_API)


def test_a_fully_isolated_node_withdraws_within_three_seconds(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("isolated")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    netfaults.cut_api(l2.netns(first))
    l2.bed.topology.set_link(l2.node(first), up=False)
    cut = time.monotonic()
    try:
        wait_for(lambda: not l2.announcing(first, vip), 8.0, "the isolated node withdrew")
        withdrew = time.monotonic() - cut
        assert withdrew < 3.0 + 1.0, f"withdrew {withdrew:.1f} s after the cut"
        moved_to(l2, vip, second, 3.0)
    finally:
        l2.bed.topology.set_link(l2.node(first), up=True)
        netfaults.clear(l2.netns(first), netfaults.CUT_API)
    moved_to(l2, vip, first, 15.0)


def test_with_the_whole_api_stopped_ips_stay_and_failover_still_works(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("outage")
    first, second = ranking(l2, vip)[:2]
    served(l2, vip)
    # The IP may be the one the previous test's Service just gave back, still answered from the
    # speakers' last plan: stop the API only once they planned this Service (its condition).
    wait_for(lambda: (c := condition(l2, "outage")) and c["status"] == "True", 10.0,
             "AnnouncedL2 of outage")  # fmt: skip
    apiserver = next(c.proc for c in l2.bed.control.children if c.role == "kube-apiserver")
    apiserver.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        with observed(l2, vip) as observer:
            wait_for(lambda: time.monotonic() - stopped > 40, 41.0, "40 s of outage", interval=1)
            assert observer.distinct_macs() == {l2.mac(first)}, "announced throughout"
            l2.signal_speaker(first, signal.SIGKILL)
            took = moved_to(l2, vip, second, 3.0)
            assert took < 1.5
            wait_for(lambda: time.monotonic() - stopped > 60, 20.0, "60 s of outage", interval=1)
    finally:
        apiserver.send_signal(signal.SIGCONT)
    l2.restart_speaker(first)
    moved_to(l2, vip, first, 15.0)


def test_a_deleted_service_leaves_no_metric_series_behind(
    l2: L2Bed, app: Callable[..., str]
) -> None:
    vip = app("series")
    owner = ranking(l2, vip)[0]
    served(l2, vip)
    assert l2.announcing(owner, vip)
    l2.core.delete_namespaced_service("series", NS)
    wait_for(lambda: not any(l2.announcing(n, vip) for n in l2.speakers), 10.0,
             "every lbctl_l2_announced series of the IP gone")  # fmt: skip


# -- other responders ------------------------------------------------------------------------------


def test_no_duplicate_responder_is_reported_between_speakers(l2: L2Bed) -> None:
    """After every takeover, hand-back and conflict above, speakers knew each other's MACs."""
    counts = {n: l2.metric(n, "lbctl_l2_duplicate_responders_total") for n in l2.speakers}
    assert counts == dict.fromkeys(l2.speakers, 0.0)


def test_a_foreign_responder_is_reported_as_a_duplicate(l2: L2Bed, app: Callable[..., str]) -> None:
    vip = app("dup")
    first = ranking(l2, vip)[0]
    served(l2, vip)
    before = l2.metric(first, "lbctl_l2_duplicate_responders_total")
    stranger = "02:00:00:00:ee:01"
    with VipResponder(l2.bed.topology.observer.netns, vip, stranger):
        wait_for(
            lambda: l2.metric(first, "lbctl_l2_duplicate_responders_total") > before,
            12.0, "DuplicateResponder counted",
        )  # fmt: skip

    def posted() -> list[Any]:  # the Event is posted after the counter rises, asynchronously
        events = l2.core.list_namespaced_event(NS, field_selector="involvedObject.name=dup")
        return [e for e in events.items if e.reason == "DuplicateResponder"]

    dup = wait_for(posted, 10.0, "the DuplicateResponder Event")
    assert stranger in dup[0].message and dup[0].type == "Warning"
