"""Builds one controller replica (its one API client, writer, reconciler, elector, metrics,
kopf registry) and runs it in this thread's loop (`lbctl-controller`, controller.main; tests run
it in a thread with controller.testing). The only controller module that builds a `kubernetes`
client (lbctl.kubeclient); it hands it to controller.kube, the only one that uses it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import kopf

from controller import handlers
from controller.blocked import Blockers, refused
from controller.config import DEFAULT_CONFIG_MAP
from controller.heartbeat import Heartbeat
from controller.kube import Kube, KubeError
from controller.lease import LeaderElector, LeaseError
from controller.metrics import Metrics
from controller.operator import Operator
from controller.reconciler import Reconciler
from lbctl.core.lease import LEASE_NAME, LeaseTiming
from lbctl.core.reasons import StartBlock
from lbctl.health import HealthServer
from lbctl.kopfsettings import kopf_settings
from lbctl.kubeclient import api_client_for, connection_info

log = logging.getLogger("lbctl.controller")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Options:
    kubeconfig: str | None = None  # None: in-cluster, else $KUBECONFIG / ~/.kube/config
    config_map: tuple[str, str] = DEFAULT_CONFIG_MAP
    lb_class: str | None = None
    metrics_host: str = "0.0.0.0"  # probes and scrapes come from the node
    metrics_port: int = 7472  # MetalLB's controller metrics port, so dashboards carry over
    instance: str | None = None  # reportingInstance of Events (default: hostname)
    leader_elect: bool = False  # campaign for the Lease (lbctl-controller turns this on)
    lease_namespace: str | None = None  # None: the ConfigMap's (main passes $POD_NAMESPACE)
    identity: str | None = None  # holderIdentity in the Lease (default: lease.default_identity())
    lease_timing: LeaseTiming | None = None  # None: LeaseTiming()'s defaults
    # Decide and log every write (object, patch), make none, the Lease included: no campaign,
    # so it can run beside a real leader without fighting it (it decides as if it led).
    dry_run: bool = False


class Controller:
    """One replica. Writes are fenced by `leader` (tests pass a callable) or, with
    `options.leader_elect`, by the Lease elector, which also activates and deactivates the
    operator as it gains and loses the Lease (docs/controller.md, High availability)."""

    def __init__(self, options: Options, *, leader: Callable[[], bool] | None = None) -> None:
        self.options = options
        self.loop: asyncio.AbstractEventLoop | None = None
        # The one client for every write and read of ours (controller.kube), the Lease included;
        # no urllib3 retries: the writers' retries and the election loop are the retry.
        self.api_client = api_client_for(options.kubeconfig, retries=False)
        self.metrics = Metrics()
        self.blockers = Blockers()
        self.metrics.watch_blockers(self.blockers)
        self.elector: LeaderElector | None = None
        self._lease_task: asyncio.Task[None] | None = None
        if options.dry_run:
            options = dataclasses.replace(options, leader_elect=False)
            self.options = options
        if options.leader_elect and leader is not None:
            raise ValueError("leader= and leader_elect are exclusive")
        self._leader = leader or (lambda: True)
        self.kube = Kube(
            self.api_client,
            leader=self.may_write,
            on_write=self.metrics.wrote,
            instance=options.instance,
            dry_run=options.dry_run,
        )
        self.lease_namespace = options.lease_namespace or options.config_map[0]
        if options.leader_elect:
            self.elector = LeaderElector.for_kube(
                self.kube,
                self.lease_namespace,
                options.identity,
                timing=options.lease_timing,
                on_started_leading=self._started_leading,
                on_stopped_leading=self._stopped_leading,
                on_other_leader=self._other_leader,
                report=self._lease_answer,
            )
            self._leader = self.elector.is_leader
        fence = self.may_write
        self.metrics.leader.set_function(lambda: 1.0 if fence() else 0.0)
        self.operator = Operator(
            self._new_reconciler, self.kube, leader=fence, blockers=self.blockers
        )
        self.heartbeat = Heartbeat()
        self.metrics.watch(lambda: self.operator.reconciler)
        self.metrics.queued.set_function(lambda: float(self.operator.queued()))
        self.metrics.activations.set_function(lambda: float(self.operator.activations))
        self.metrics.retrying.set_function(lambda: float(self.operator.pending_retries()))
        self.registry = kopf.OperatorRegistry()
        self.config_registry = kopf.OperatorRegistry()
        login = lambda: connection_info(self.api_client)  # noqa: E731
        handlers.register(self.registry, self.operator, login)
        handlers.register_config(self.config_registry, self.operator, login)
        self.health = HealthServer(
            self.metrics,
            alive=self.heartbeat.alive,
            ready=self.is_ready,
            explain=self.blockers.why,
            host=options.metrics_host,
            port=options.metrics_port,
        )

    def is_ready(self) -> bool:
        """/readyz: restored (or a standby) and nothing blocks the controller."""
        return self.operator.is_ready() and not self.blockers.blocked()

    async def _lease_answer(self, doing: str, err: LeaseError | None) -> bool:
        """The elector's report: an answer that blocks the controller becomes a blocker."""
        if err is None:
            self.blockers.clear_all("lease")
            return False
        if err.status == 403 or (err.status == 404 and doing == "create"):
            # A create's 404: no such namespace; a 403 may mean that too, RBAC being namespaced
            # (no Role can exist in a namespace that does not), so ask: it may read Namespaces.
            try:
                exists = await self.operator.writers.call(
                    self.kube.namespace_exists, self.lease_namespace
                )
                missing = not exists
            except KubeError:
                missing = err.status == 404
            if missing:
                self.blockers.block(
                    StartBlock.LEASE_NAMESPACE_MISSING,
                    "lease",
                    f"namespace {self.lease_namespace} does not exist, so the Lease "
                    f"{self.lease_namespace}/{LEASE_NAME} cannot be created and this replica "
                    "never leads: create the namespace (deploy/rbac.yaml does), or run with "
                    "--namespace (default: $POD_NAMESPACE, else the ConfigMap's namespace)",
                )
                return True
        return refused(self.blockers, "lease", err)

    def may_write(self) -> bool:
        """The fence every write but the Lease's passes (controller.kube asks it)."""
        return self._leader()

    # The elector calls these on the controller's loop, as leadership flips. A leader that
    # misses its renew deadline (a starved CPU: 2 s) but renews the Lease before anyone else
    # took it resumes with what it had; any other start restores from a listing.
    def _started_leading(self) -> None:
        assert self.elector is not None  # only the elector calls this
        if not (self.elector.continued and self.operator.resume()):
            self.operator.deactivate()
            self.operator.start_activation()

    def _stopped_leading(self) -> None:
        self.operator.suspend()

    def _other_leader(self) -> None:
        self.operator.forget()

    def _new_reconciler(self) -> Reconciler:
        opts = self.options
        return Reconciler(opts.config_map, lb_class=opts.lb_class, recorder=self.metrics)

    @property
    def reconciler(self) -> Reconciler:
        """The deciding state (replaced on each activation)."""
        return self.operator.reconciler

    async def run(self, stop_flag: threading.Event | None = None) -> None:
        """Run until stop_flag is set (or kopf is signalled, in the main thread)."""
        self.loop = asyncio.get_running_loop()
        self.health.start()
        log.info("controller_started metrics_port=%d", self.health.port)
        # Created before kopf.operator, so kopf leaves them to us at exit.
        tasks = [
            asyncio.create_task(self.operator.retries.run(), name="lbctl-retry"),
            asyncio.create_task(self.heartbeat.run(), name="lbctl-heartbeat"),
            asyncio.create_task(self.blockers.run(), name="lbctl-blockers"),
            *self.operator.writers.start(),
        ]
        if self.elector is not None:
            who, ns = self.elector.identity, self.lease_namespace
            log.info("leader_election identity=%s namespace=%s", who, ns)
            self._lease_task = asyncio.create_task(self.elector.run(), name="lbctl-lease")
            tasks.append(self._lease_task)
        stop = stop_flag or threading.Event()
        try:
            await self._watch(stop)
        finally:
            stop.set()  # releases kopf's threads waiting on it
            for task in tasks:
                if not task.cancelling():  # the elector, signalled, may be releasing the Lease
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.close()

    async def _watch(self, stop: threading.Event) -> None:
        """kopf's watches, as two operators run as one (kopf.spawn_tasks, then one
        kopf.run_tasks: when either stops, both do): Services and Namespaces cluster-wide, and
        the one ConfigMap by a watch of its namespace with fieldSelector=metadata.name=NAME on
        the wire (kopf's settings.watching.field_selectors), so RBAC grants ConfigMaps in that
        namespace only (a Role) and no other ConfigMap is ever sent to the controller."""
        ns, name = self.options.config_map
        config_settings = kopf_settings()
        config_settings.watching.field_selectors["v1", "configmaps"] = f"metadata.name={name}"
        existing = asyncio.all_tasks()
        tasks = [
            *await kopf.spawn_tasks(
                registry=self.registry,
                settings=kopf_settings(),
                standalone=True,
                clusterwide=True,
                stop_flag=stop,
            ),
            *await kopf.spawn_tasks(
                registry=self.config_registry,
                settings=config_settings,
                standalone=True,
                namespaces=[ns],
                stop_flag=stop,
            ),
        ]
        if threading.current_thread() is threading.main_thread():
            # Each spawn installed its own SIGTERM/SIGINT handler, the last one replacing the
            # first: one handler for both instead, through the stop flag they share.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled, stop)
        await kopf.run_tasks(tasks, ignored=existing)

    def _signalled(self, stop: threading.Event) -> None:
        """SIGTERM or SIGINT: hand the Lease over now (cancelling the elector releases it, its
        fence closed first), not after kopf's shutdown, whose length the standby would wait."""
        stop.set()
        if self._lease_task is not None:
            self._lease_task.cancel()

    def close(self) -> None:
        self.health.stop()
        self.operator.close()
        with contextlib.suppress(Exception):
            cast(Callable[[], None], self.api_client.close)()
