"""The whole bed in one context manager: the network namespaces, the real control plane (reached
from inside every node namespace on 127.0.0.1:6443), the kubelet stand-in and a real kube-proxy
per node; used by netns/e2e tests and the lab."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from lbctl.lab import kubebin, kubeproxy, nsutil, plan
from lbctl.lab.controlplane import ControlPlane
from lbctl.lab.kubelet import Kubelet
from lbctl.lab.procs import wait_for
from lbctl.lab.relay import NODE_API_PORT
from lbctl.lab.topology import Topology
from lbctl.lab.workloads import node_identity

RELAY_TIMEOUT = 10.0
NODES_TIMEOUT = 30.0  # not-ready is lifted within one node-monitor period (1 s) of Ready


class Bed:
    """`with Bed(nodes=3) as bed:` gives bed.topology, bed.control, bed.kubelet, bed.kubeconfig."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        node_labels: Mapping[str, Mapping[str, str]] | None = None,
        kubelet: bool = True,
        kube_proxy: bool = True,
        keep_run_dir: bool = False,
        runid: str | None = None,
        root: Path = plan.RUN_ROOT,
        api_port: int = 0,
    ) -> None:
        self.topology = Topology(nodes, runid=runid, root=root, keep_run_dir=keep_run_dir)
        self._api_port = api_port
        self._node_labels = node_labels
        self._want_kubelet = kubelet
        self._want_proxy = kubelet and kube_proxy  # kube-proxy waits for its registered Node
        self._control: ControlPlane | None = None
        self.kubelet: Kubelet | None = None

    @property
    def control(self) -> ControlPlane:
        if self._control is None:
            raise RuntimeError("the bed is not up")
        return self._control

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in system:masters), reached from the host."""
        return self.control.admin_kubeconfig

    @property
    def node_api_url(self) -> str:
        """The API as processes inside a node namespace reach it."""
        return f"https://127.0.0.1:{NODE_API_PORT}"

    def node_kubeconfig(
        self, node: str, identity: str | None = None, groups: Sequence[str] = ()
    ) -> Path:
        """A kubeconfig for a process inside `node`'s namespace, with a client certificate for
        user `identity` (default "speaker-<node>"), so the audit log tells agents apart."""
        user = identity or f"speaker-{node}"
        return self.control.kubeconfig_for(
            f"{user}-{node}".replace(":", "-"), user, groups, server=self.node_api_url
        )

    def __enter__(self) -> Bed:
        self.topology.up()
        try:
            self.populate()
        except BaseException:
            self.close()
            raise
        return self

    def populate(self) -> None:
        """Start the control plane, the API relay, the kubelet and kube-proxy on a topology that
        is up (the lab records itself in the run's state between the two steps)."""
        topo = self.topology
        bins = kubebin.ensure()
        self._control = ControlPlane(
            topo.run_dir,
            port=self._api_port,
            binaries=bins,
            spawn=lambda argv, role: topo.spawn(None, argv, role=role),
        ).start()
        relay = topo.spawn(
            None,
            [
                sys.executable, "-m", "lbctl.lab.relay",
                "--upstream", f"127.0.0.1:{self.control.port}",
                *(n.netns for n in topo.nodes),
            ],
            role="relay",
        )  # fmt: skip
        for netns in (n.netns for n in topo.nodes):
            wait_for(
                functools.partial(_listening, netns, relay),
                RELAY_TIMEOUT,
                f"the API relay in {netns}",
                error=RuntimeError,
            )
        if relay.poll() is not None:
            raise RuntimeError(f"the API relay exited ({relay.returncode}); see logs/relay.log")
        if not self._want_kubelet:
            return
        kubeconfigs = {
            n.name: self.control.kubeconfig_for(f"kubelet-{n.name}", *node_identity(n.name))
            for n in topo.nodes
        }
        self.kubelet = Kubelet(topo, kubeconfigs, node_labels=self._node_labels).start()
        wait_for(
            self._nodes_schedulable, NODES_TIMEOUT, "the node lifecycle controller to lift the "
            "not-ready taint of every node", error=RuntimeError, interval=0.2,
        )  # fmt: skip
        if self._want_proxy:
            for node in topo.nodes:
                kubeconfig = self.node_kubeconfig(node.name, "system:kube-proxy")
                kubeproxy.start(
                    topo, node, bins / "kube-proxy", kubeconfig, self.control.cluster_cidr
                )

    def _nodes_schedulable(self) -> bool:
        nodes = self.control.get("/api/v1/nodes")["items"]
        return len(nodes) == len(self.topology.nodes) and not any(
            (n.get("spec") or {}).get("taints") for n in nodes
        )

    def close(self) -> None:
        """Stop the kubelet, then every process and namespace of the run (the topology stops
        the control plane, the relay and kube-proxy by the PIDs it recorded)."""
        try:
            if self.kubelet is not None:
                self.kubelet.stop()
        finally:
            self.topology.down()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _listening(netns: str, relay: subprocess.Popen[bytes]) -> bool:
    """The relay listens in `netns` (or has exited: the caller reports that)."""
    if relay.poll() is not None:
        return True
    try:
        nsutil.connect_tcp_in_netns(netns, "127.0.0.1", NODE_API_PORT, timeout=0.5).close()
    except nsutil.NetnsError:
        return False
    return True
