"""Builds one speaker (client, data plane, BGP announcer, agent, metrics, kopf registry) and runs
it: kopf and the agent on a control thread, the L2 data plane and the BGP announcer on their own
threads, signals on the main thread, so a SIGTERM first hands the node's L2 IPs to its monitors
and only then stops the watches and ExaBGP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import kopf

from lbctl.core.model import IPAddress, NodeName
from lbctl.health import HealthServer
from lbctl.kopfsettings import kopf_settings
from lbctl.restclient import RestClient, connection_info, credentials_for
from speaker import handlers
from speaker.agent import Agent
from speaker.announcers.bgp import BGPAnnouncer, BGPHooks
from speaker.announcers.layer2 import Layer2Announcer, Layer2Hooks
from speaker.bgp import Announcer as BGPAnnouncerLike
from speaker.dataplane import DataPlane
from speaker.dataplane_types import Announcer
from speaker.kube import Kube
from speaker.metrics import Metrics

log = logging.getLogger("lbctl.speaker")
DEFAULT_PROBE_PORT = 7946  # MetalLB's memberlist port: firewalls open for MetalLB fit us too
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    node: str
    kubeconfig: str | None = None
    config_map: tuple[str, str] = ("lbctl-system", "lbctl-config")
    lb_class: str | None = None
    probe_host: str = "0.0.0.0"
    probe_port: int = DEFAULT_PROBE_PORT
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 7472
    bgp_dir: str = "/run/lbctl-speaker/bgp"  # ExaBGP's configs (0600), sockets and logs


class Speaker:
    """One node's speaker. `announcer` is built by the caller (speaker.main builds the L2
    announcer; tests may pass another)."""

    def __init__(
        self,
        options: Options,
        announcer: Announcer | None = None,
        bgp: BGPAnnouncerLike | None = None,
    ) -> None:
        self.options = options
        credentials = credentials_for(options.kubeconfig)
        self.api_client = RestClient(credentials)
        self.metrics = Metrics()
        node = NodeName(options.node)
        self.kube = Kube(self.api_client, node)
        if announcer is None:
            announcer = Layer2Announcer(self._hooks())
        self.dataplane = DataPlane(
            node,
            announcer,
            bind=(options.probe_host, options.probe_port),
            on_foreign=self._foreign,
        )
        if bgp is None:
            bgp = BGPAnnouncer(Path(options.bgp_dir), hooks=self._bgp_hooks())
        self.bgp = bgp
        self.agent = Agent(
            node, self.kube, self.dataplane, self.metrics,
            config_ref=options.config_map, lb_class=options.lb_class, bgp=bgp,
        )  # fmt: skip
        self.dataplane.on_change = self.agent.on_held
        self.registry = kopf.OperatorRegistry()
        handlers.register(self.registry, self.agent, lambda: connection_info(credentials))
        self.health = HealthServer(
            self.metrics,
            alive=lambda: self._thread is not None and self._thread.is_alive(),
            ready=lambda: self.agent.config is not None,
            host=options.metrics_host,
            port=options.metrics_port,
        )
        self._reported: set[tuple[IPAddress, str]] = set()
        self._stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    def _hooks(self) -> Layer2Hooks:
        """The announcer's hooks, called on the data-plane loop: metrics, and claims of our VIPs
        by other MACs (a peer speaker, or a DuplicateResponder)."""
        m = self.metrics

        def family(ip: IPAddress) -> str:
            return f"ipv{ip.version}"

        return Layer2Hooks(
            on_announce=lambda ip, _: m.frames_sent.labels(family=family(ip)).inc(),
            on_request=lambda ip, _: m.requests.labels(family=family(ip)).inc(),
            on_answer=lambda ip, _: m.answers.labels(family=family(ip)).inc(),
            on_foreign_claim=lambda ip, mac, iface: self.dataplane.conflict(ip, str(mac), iface),
            # a lambda: the data plane is made after the announcer and its hooks
            on_interfaces=lambda: self.dataplane.interfaces_changed(),  # noqa: PLW0108
            awake=lambda: self.dataplane.awake(),  # noqa: PLW0108
        )

    def _bgp_hooks(self) -> BGPHooks:
        """The BGP announcer's hooks, called on its thread: the agent's BGP side learns of
        status changes (it rewrites conditions), the rest are metrics."""
        m = self.metrics
        return BGPHooks(
            on_status=lambda statuses: (
                self.agent.bgp.on_status(statuses) if self.agent.bgp is not None else None
            ),
            on_updates=lambda peer, n: m.bgp_updates.labels(peer=peer).inc(n),
            on_restart=lambda peer, reason: m.bgp_restarts.labels(peer=peer, reason=reason).inc(),
            on_command_error=lambda peer, _: m.bgp_errors.labels(peer=peer).inc(),
        )

    def _foreign(self, ip: IPAddress, mac: str, iface: str) -> None:
        """A MAC that is no speaker's answers for an IP this node announces (data-plane thread);
        counted and reported once per IP and MAC."""
        if (ip, mac) in self._reported:
            return
        self._reported.add((ip, mac))
        self.metrics.duplicates.inc()
        log.warning("duplicate_responder ip=%s mac=%s interface=%s", ip, mac, iface)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            message = f"{mac} also answers for {ip} on {self.options.node}'s {iface}"
            coro = self.agent.post_event(ip, "Warning", "DuplicateResponder", message)
            asyncio.run_coroutine_threadsafe(coro, loop)

    def start(self) -> None:
        """Start the data plane, the BGP announcer, the health endpoint and the control thread."""
        self.dataplane.start()
        self.bgp.start()
        self.health.start()
        self._thread = threading.Thread(target=self._control, name="control", daemon=True)
        self._thread.start()
        log.info(
            "speaker_started node=%s probe_port=%d metrics_port=%d",
            self.options.node, self.options.probe_port, self.health.port,
        )  # fmt: skip

    def _control(self) -> None:
        try:
            asyncio.run(self._run_control())
        except BaseException as err:
            self.error = err
            log.exception("control_loop_crashed")

    async def _run_control(self) -> None:
        self._loop = asyncio.get_running_loop()
        agent = asyncio.create_task(self.agent.run(), name="lbctl-agent")
        try:
            await kopf.operator(
                registry=self.registry,
                settings=kopf_settings(),
                memories=handlers.ForgetfulMemories(),
                standalone=True,
                clusterwide=True,
                stop_flag=self._stop_flag,
            )
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)

    def stop(self, *, graceful: bool = True) -> None:
        """Hand over (graceful) and stop answering, then stop the watches and the endpoint."""
        self.dataplane.stop(graceful=graceful)
        self._stop_flag.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self.bgp.close()
        self.health.stop()
        with contextlib.suppress(Exception):
            self.api_client.close()

    def wait(self, stop: threading.Event) -> None:
        """Block until `stop` is set or the control thread ends."""
        while not stop.wait(0.5):
            if self._thread is None or not self._thread.is_alive():
                return
