"""The real kube-proxy in each node namespace (nftables mode, the node's name), as the bed's
children; used by the bed and the lab."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lbctl.lab.topology import NodeMember, Topology

HEALTHZ_PORT = 10256


def config(node: str, kubeconfig: Path, cluster_cidr: str) -> dict[str, object]:
    """KubeProxyConfiguration for one node (the same fields kind's kubeadm config sets)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "hostnameOverride": node,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": cluster_cidr,
        "healthzBindAddress": f"0.0.0.0:{HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        # nf_conntrack_max is read-only inside a network namespace: leave conntrack alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def start(
    topology: Topology,
    node: NodeMember,
    binary: Path,
    kubeconfig: Path,
    cluster_cidr: str,
) -> subprocess.Popen[bytes]:
    """Write the node's config and start kube-proxy inside its namespace (logs/kube-proxy-N)."""
    path = topology.run_dir / f"kube-proxy-{node.name}.json"
    path.write_text(json.dumps(config(node.name, kubeconfig, cluster_cidr), indent=1))
    return topology.spawn(
        node.netns,
        [str(binary), f"--config={path}", "--v=1"],
        role=f"kube-proxy-{node.name}",
    )
