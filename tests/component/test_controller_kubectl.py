"""The user's path with the real kubectl: expose a Deployment, get an IP, read why."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from controller_bed import Bed, bed, controller, kubectl, lbctl_config

from lbctl.lab.controlplane import ControlPlane

POOLS = """\
- name: public
  addresses: ["192.0.2.8-192.0.2.9"]
"""


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with bed(control_plane, tmp_path_factory.mktemp("kubectl")) as b:
        b.set_config(lbctl_config(POOLS))
        with controller(b):
            yield b


def test_expose_gets_ip_visible_to_kubectl_with_event_and_condition(world: Bed) -> None:
    kubectl(world, "create", "deployment", "web", "--image=x")
    kubectl(world, "expose", "deployment", "web", "--port=80", "--type=LoadBalancer")
    kubectl(
        world,
        "wait",
        "--for=jsonpath={.status.loadBalancer.ingress[0].ip}=192.0.2.8",
        "svc/web",
        "--timeout=10s",
    )
    listing = kubectl(world, "get", "svc", "web")
    assert "192.0.2.8" in listing.splitlines()[1]
    kubectl(world, "wait", "--for=condition=lbctl.io/IPAllocated", "svc/web", "--timeout=10s")
    described = kubectl(world, "describe", "svc", "web")
    assert "IPAllocated" in described
    assert "assigned 192.0.2.8 from pool public" in described
    assert "lbctl.io/ip-allocated-from-pool: public" in described
    meta = json.loads(kubectl(world, "get", "svc", "web", "-o", "json"))["metadata"]
    assert not meta.get("finalizers")  # kopf keeps no state on users' Services
    assert not [k for k in meta.get("annotations", {}) if "kopf" in k]


def test_exhausted_pool_shows_pending_and_why(world: Bed) -> None:
    kubectl(world, "create", "service", "loadbalancer", "second", "--tcp=80:80")
    kubectl(
        world,
        "wait",
        "--for=jsonpath={.status.loadBalancer.ingress[0].ip}=192.0.2.9",
        "svc/second",
        "--timeout=10s",
    )
    kubectl(world, "create", "service", "loadbalancer", "third", "--tcp=80:80")
    kubectl(
        world,
        "wait",
        "--for=condition=lbctl.io/IPAllocated=False",
        "svc/third",
        "--timeout=10s",
    )
    assert "<pending>" in kubectl(world, "get", "svc", "third")
    described = kubectl(world, "describe", "svc", "third")
    assert "PoolExhausted" in described
    assert "pool public is full: 2/2 used" in described
    kubectl(world, "delete", "svc", "second")
    kubectl(
        world,
        "wait",
        "--for=jsonpath={.status.loadBalancer.ingress[0].ip}=192.0.2.9",
        "svc/third",
        "--timeout=10s",
    )
