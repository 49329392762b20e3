"""The whole bed in one context manager: the network namespaces, the real control plane (reached
from inside every node namespace on 127.0.0.1:6443), the kubelet stand-in and a real kube-proxy
per node; used by netns/e2e tests and the lab."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from lbctl.lab import kubebin, kubeproxy, nsutil
from lbctl.lab.controlplane import ControlPlane
from lbctl.lab.kubelet import Kubelet, node_identity
from lbctl.lab.procs import wait_for
from lbctl.lab.relay import NODE_API_PORT
from lbctl.lab.topology import Topology

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
    ) -> None:
        self.topology = Topology(nodes, keep_run_dir=keep_run_dir)
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
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        topo = self.topology
        bins = kubebin.ensure()
        self._control = ControlPlane(
            topo.run_dir,
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
        for node in topo.nodes:
            wait_for(
                lambda n=node: relay.poll() is not None or _listening(n.netns),
                RELAY_TIMEOUT,
                f"the API relay in {node.netns}",
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


def _listening(netns: str) -> bool:
    try:
        nsutil.connect_tcp_in_netns(netns, "127.0.0.1", NODE_API_PORT, timeout=0.5).close()
    except nsutil.NetnsError:
        return False
    return True
