"""The whole bed in one context manager: topology, API server (also on 127.0.0.1 inside every
node namespace), kubelet and kubeconfigs; used by netns/e2e tests and the lab."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from lbctl.lab import nsutil
from lbctl.lab.apiserver import ApiServer
from lbctl.lab.kubelet import Kubelet
from lbctl.lab.topology import Topology

NODE_API_PORT = 6443  # every node namespace has its own loopback, so one port serves all


class Bed:
    """`with Bed(nodes=3) as bed:` gives bed.topology, bed.api, bed.kubelet, bed.kubeconfig."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        node_labels: Mapping[str, Mapping[str, str]] | None = None,
        node_api_port: int = NODE_API_PORT,
        kubelet: bool = True,
        keep_run_dir: bool = False,
    ) -> None:
        self.topology = Topology(nodes, keep_run_dir=keep_run_dir)
        self.api = ApiServer()
        self.node_api_port = node_api_port
        self._node_labels = node_labels
        self._want_kubelet = kubelet
        self.kubelet: Kubelet | None = None

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig, reached from the host namespace."""
        return self.topology.run_dir / "admin.kubeconfig"

    def node_kubeconfig(self, node: str, identity: str | None = None) -> Path:
        """A kubeconfig for processes inside `node`'s namespace: http://127.0.0.1:PORT there,
        token `identity` (default "speaker-<node>") so the request log tells speakers apart."""
        ident = identity or f"speaker-{node}"
        return self.api.write_kubeconfig(
            self.topology.run_dir / f"{ident}.kubeconfig",
            identity=ident,
            server=f"http://127.0.0.1:{self.node_api_port}",
        )

    def __enter__(self) -> Bed:
        self.topology.up()
        try:
            self.api.start()
            self.api.write_kubeconfig(self.kubeconfig, identity="admin")
            for node in self.topology.nodes:
                sock = nsutil.listen_tcp_in_netns(node.netns, "127.0.0.1", self.node_api_port)
                self.api.serve_socket(sock, node.name)
            if self._want_kubelet:
                kubeconfig = self.api.write_kubeconfig(
                    self.topology.run_dir / "kubelet.kubeconfig", identity="kubelet"
                )
                self.kubelet = Kubelet(
                    self.topology, kubeconfig=kubeconfig, node_labels=self._node_labels
                ).start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the kubelet, the API server, then the topology; each step runs even if one
        before it failed."""
        try:
            if self.kubelet is not None:
                self.kubelet.stop()
        finally:
            try:
                self.api.stop()
            finally:
                self.topology.down()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
