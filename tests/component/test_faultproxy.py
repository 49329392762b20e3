"""The fault proxy in front of the real API server: each fault as a client sees it, per client
and per source, watches streamed event by event, and the request log."""

from __future__ import annotations

import gc
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_bed import Bed, bed, wait_for

from lbctl.lab.controlplane import ControlPlane
from lbctl.lab.faultproxy import FaultProxy

ME = "prober"  # the bed's ServiceAccount: the identity rules select and the log records


@dataclass
class Raw:
    """HTTPS straight to a port of the proxy, with a bearer token: wire details the clients
    hide (status lines, resets, how a watch stream ends)."""

    port: int
    token: str
    ca: Path

    def conn(self, timeout: float = 5.0) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = self.conn()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {self.token}"}
            if data is not None:
                headers["Content-Type"] = "application/merge-patch+json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def watch(self, path: str, timeout: float = 10.0) -> tuple[list[dict[str, Any]], float]:
        """Events until the stream ends (or `timeout`), and the seconds it stayed open."""
        conn = self.conn(timeout)
        started, events = time.monotonic(), []
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            while line := resp.readline():
                events.append(json.loads(line))
        except TimeoutError:
            pass
        finally:
            conn.close()
        return events, time.monotonic() - started


@dataclass
class Scene:
    b: Bed
    ns: str
    raw: Raw

    @property
    def proxy(self) -> FaultProxy:
        return self.b.proxy

    @property
    def configmaps(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/configmaps"

    def configmap(self, name: str) -> None:
        body = {"metadata": {"name": name}}
        self.b.core.create_namespaced_config_map(self.ns, body)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def module_scene(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("faultproxy")
    with bed(control_plane, tmp) as b:
        # ConfigMaps are granted by a Role in the bed's config namespace (deploy/rbac.yaml's
        # least privilege): the prober reads them there.
        ns = b.config_ns
        kubeconfig = yaml.safe_load(b.kubeconfig(ME).read_text())
        token = kubeconfig["users"][0]["user"]["token"]
        yield Scene(b, ns, Raw(b.proxy.port, token, control_plane.pki.ca))


@pytest.fixture
def scene(module_scene: Scene) -> Iterator[Scene]:
    yield module_scene
    module_scene.proxy.faults.clear()


def test_error_answers_a_status_then_stops_after_its_count(scene: Scene) -> None:
    rule = scene.proxy.faults.error(409, identity=ME, verb="list", count=2)
    for _ in range(2):
        status, body = scene.raw("GET", scene.configmaps)
        assert status == 409
        assert (body["kind"], body["code"], body["reason"]) == ("Status", 409, "Conflict")
    assert scene.raw("GET", scene.configmaps)[0] == 200
    assert scene.proxy.faults.rules() == []
    assert rule.kind.value == "error"


def test_rules_select_by_identity_and_verb(scene: Scene) -> None:
    scene.proxy.faults.error(500, identity="someone-else")
    scene.proxy.faults.error(500, identity=ME, verb="create")
    assert scene.raw("GET", scene.configmaps)[0] == 200


def test_identity_is_the_service_account_and_the_log_has_the_answer(scene: Scene) -> None:
    assert scene.raw("GET", f"{scene.configmaps}/missing")[0] == 404
    assert scene.raw("PATCH", f"{scene.configmaps}/missing", {"data": {}})[0] == 403
    *_, got, patched = scene.proxy.requests(identity=ME)
    assert (got.source, got.verb, got.method, got.status) == ("host", "get", "GET", 404)
    assert got.path == f"{scene.configmaps}/missing"
    assert (patched.verb, patched.status) == ("patch", 403)  # RBAC: reads only, for it


def test_delay_holds_the_request_then_serves_it(scene: Scene) -> None:
    scene.proxy.faults.delay(0.5, identity=ME, count=1)
    started = time.monotonic()
    assert scene.raw("GET", scene.configmaps)[0] == 200
    assert time.monotonic() - started >= 0.5
    assert scene.proxy.requests(identity=ME)[-1].duration >= 0.5


def test_a_request_its_client_gave_up_on_still_reaches_the_api_server(scene: Scene) -> None:
    """As on a real network: the request was sent; a client's timeout does not take it back."""
    scene.configmap("late")
    scene.proxy.faults.delay(1.5, identity=ME, verb="get", count=1)
    conn = scene.raw.conn(timeout=0.3)
    with pytest.raises(TimeoutError):
        headers = {"Authorization": f"Bearer {scene.raw.token}"}
        conn.request("GET", f"{scene.configmaps}/late", headers=headers)
        conn.getresponse()
    conn.close()

    def logged() -> Any:
        return [r for r in scene.proxy.requests(identity=ME) if r.path.endswith("/late")]

    [record] = wait_for(logged, 5, "the late answer in the log")
    assert record.status == 200
    assert record.duration >= 1.5


def test_watch_is_forwarded_event_by_event(scene: Scene) -> None:
    got: list[tuple[list[dict[str, Any]], float]] = []
    path = f"{scene.configmaps}?watch=1&timeoutSeconds=3&resourceVersion=0"
    reader = threading.Thread(target=lambda: got.append(scene.raw.watch(path)))
    reader.start()
    wait_for(lambda: any(r.verb == "watch" for r in scene.proxy.requests(identity=ME)), 5, "watch")
    scene.configmap("streamed")
    reader.join(10)
    events, open_for = got[0]
    assert "streamed" in [e["object"]["metadata"]["name"] for e in events]
    assert open_for >= 2.5  # the API server's timeout ended it, not the proxy


def test_drop_watch_after_events_ends_the_stream_after_exactly_n(scene: Scene) -> None:
    for name in ("d1", "d2", "d3"):
        scene.configmap(name)
    scene.proxy.faults.drop_watch(identity=ME, after_events=2, count=1)
    events, open_for = scene.raw.watch(f"{scene.configmaps}?watch=1&timeoutSeconds=5")
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    assert open_for < 2


def test_drop_watch_after_seconds(scene: Scene) -> None:
    scene.proxy.faults.drop_watch(identity=ME, after_seconds=0.5, count=1)
    _, open_for = scene.raw.watch(f"{scene.configmaps}?watch=1&timeoutSeconds=5")
    assert 0.5 <= open_for < 2


def test_watch_gone_sends_one_410_event_then_ends(scene: Scene) -> None:
    scene.proxy.faults.watch_gone(identity=ME, count=1)
    events, _ = scene.raw.watch(f"{scene.configmaps}?watch=1&timeoutSeconds=5")
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
        ("ERROR", 410, "Expired")
    ]


def test_cut_watches_ends_the_open_streams_of_an_identity(scene: Scene) -> None:
    got: list[tuple[list[dict[str, Any]], float]] = []
    path = f"{scene.configmaps}?watch=1&timeoutSeconds=30"
    reader = threading.Thread(target=lambda: got.append(scene.raw.watch(path)))
    reader.start()
    wait_for(lambda: scene.proxy.cut_watches(identity=ME) == 1, 5, "a watch to cut")
    reader.join(5)
    assert got and got[0][1] < 5


def test_outage_503_then_healthy(scene: Scene) -> None:
    rule = scene.proxy.faults.outage("503")
    assert scene.raw("GET", "/api")[0] == 503
    assert scene.raw("GET", scene.configmaps)[0] == 503
    scene.proxy.faults.remove(rule)
    assert scene.raw("GET", scene.configmaps)[0] == 200


def test_outage_reset_resets_the_connection(scene: Scene) -> None:
    scene.proxy.faults.outage("reset", identity=ME, count=1)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, ssl.SSLError)):
        scene.raw("GET", scene.configmaps)
    assert scene.proxy.requests(identity=ME)[-1].status == 499
    assert scene.raw("GET", scene.configmaps)[0] == 200


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except ConnectionRefusedError:
        return False


def test_refuse_closes_the_sources_listener_and_only_its_own(scene: Scene) -> None:
    node_sock = socket.socket()
    node_sock.bind(("127.0.0.1", 0))
    node_sock.listen(16)
    node_port = node_sock.getsockname()[1]
    scene.proxy.serve_socket(node_sock, "node-a")
    node = Raw(node_port, scene.raw.token, scene.raw.ca)
    assert node("GET", scene.configmaps)[0] == 200
    assert scene.proxy.requests(identity=ME)[-1].source == "node-a"
    scene.proxy.faults.error(500, source="node-a")
    assert node("GET", scene.configmaps)[0] == 500
    assert scene.raw("GET", scene.configmaps)[0] == 200
    scene.proxy.faults.clear()
    rule = scene.proxy.faults.outage("refuse", source="node-a")
    assert not _connects(node_port)
    assert scene.raw("GET", scene.configmaps)[0] == 200
    scene.proxy.faults.remove(rule)
    assert node("GET", scene.configmaps)[0] == 200  # re-opened on the same address


def test_stop_during_an_injected_delay_ends_the_request_and_leaks_nothing(
    control_plane: ControlPlane, scene: Scene
) -> None:
    proxy = FaultProxy(control_plane).start()
    rule = proxy.faults.delay(30)
    raw = Raw(proxy.port, scene.raw.token, scene.raw.ca)
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.append(_try(raw, scene.configmaps)))
    caller.start()
    wait_for(lambda: proxy.faults.hits(rule) == 1, 5, "the delayed request")
    started = time.monotonic()
    proxy.stop()
    caller.join(10)
    gc.collect()  # a transport left open would raise ResourceWarning here, under -W error
    assert result, "the delayed request never ended"
    assert time.monotonic() - started < 5


def _try(raw: Raw, path: str) -> Any:
    try:
        return raw("GET", path)[0]
    except (OSError, http.client.HTTPException) as err:
        return err
