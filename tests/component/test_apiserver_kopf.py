"""Real kopf 1.45 in-process against the bed: a Service operator with a finalizer."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kubernetes import client

from lbctl.lab.apiserver import ApiServer

FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@pytest.fixture
def operator(api: ApiServer) -> Iterator[dict[str, list[str]]]:
    """Run kopf in its own thread and loop (sharing the server's loop makes stops take 5 s)."""
    seen: dict[str, list[str]] = {"create": [], "update": [], "delete": []}
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=api.url, token="kopf", scheme="Bearer")

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 10
        settings.posting.level = logging.INFO

    @kopf.on.create("v1", "services", registry=registry)
    def created(name: str, patch: kopf.Patch, **_: Any) -> None:
        seen["create"].append(name)
        patch.status["loadBalancer"] = {"ingress": [{"ip": "192.0.2.77"}]}

    @kopf.on.update("v1", "services", registry=registry)
    def updated(name: str, **_: Any) -> None:
        seen["update"].append(name)

    @kopf.on.delete("v1", "services", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        seen["delete"].append(name)

    stop, ready = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=True,
                stop_flag=stop,
                ready_flag=ready,
            )
        )

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "kopf did not get ready"
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


def test_kopf_adds_finalizer_runs_handlers_and_completes_delete(
    api: ApiServer,
    core: client.CoreV1Api,
    svc: Any,
    operator: dict[str, list[str]],
    wait_for: Any,
) -> None:
    core.create_namespaced_service("default", svc("web", type="LoadBalancer"))

    def ingress() -> Any:
        got = core.read_namespaced_service("web", "default")
        return got.status.load_balancer.ingress and got

    got = wait_for(ingress, timeout=10, what="kopf to patch the status")
    assert got.status.load_balancer.ingress[0].ip == "192.0.2.77"
    assert FINALIZER in got.metadata.finalizers
    assert operator["create"] == ["web"]

    core.patch_namespaced_service("web", "default", {"spec": {"selector": {"app": "v2"}}})
    wait_for(lambda: operator["update"], timeout=10, what="the update handler")

    core.delete_namespaced_service("web", "default")
    wait_for(
        lambda: not core.list_namespaced_service("default").items,
        timeout=10,
        what="the delete to complete",
    )
    assert operator["delete"] == ["web"]
    kopf_calls = api.requests(identity="kopf")
    assert {"list", "watch", "patch"} <= {r.verb for r in kopf_calls}
    assert all(r.status < 500 for r in kopf_calls)
