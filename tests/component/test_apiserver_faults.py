"""The fault injector and the request log: what the clients see when the API misbehaves."""

from __future__ import annotations

import gc
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lbctl.lab.api.reqlog import RequestLog, RequestRecord
from lbctl.lab.apiserver import ApiServer

SVC = "/api/v1/namespaces/default/services"
CM = "/api/v1/namespaces/default/configmaps"


def test_injected_500s_hit_the_client_then_stop(api: ApiServer, core: client.CoreV1Api) -> None:
    rule = api.faults.error(500, identity="tester", verb="list", count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_service("default")
        assert err.value.status == 500
    assert core.list_namespaced_service("default").items == []
    assert api.faults.rules() == []
    assert rule.kind.value == "error"


def test_fault_selects_by_identity(api: ApiServer, raw: Any, core: client.CoreV1Api) -> None:
    api.faults.error(500, identity="someone-else")
    assert raw("GET", SVC).status == 200
    assert core.list_namespaced_service("default").items == []


def test_injected_409_on_patch_by_path_regex(api: ApiServer, raw: Any, svc: Any) -> None:
    raw("POST", SVC, svc("web"))
    rule = api.faults.error(409, path=re.compile(r"/services/web$"), verb="patch")
    reply = raw(
        "PATCH",
        f"{SVC}/web",
        {"metadata": {"labels": {"a": "b"}}},
        ctype="application/merge-patch+json",
    )
    assert reply.status == 409
    assert reply.body["kind"] == "Status"
    assert raw("GET", f"{SVC}/web").status == 200  # other verbs pass
    assert api.faults.hits(rule) == 1
    api.faults.remove(rule)
    assert raw("PATCH", f"{SVC}/web", {}, ctype="application/merge-patch+json").status == 200


def test_added_delay(api: ApiServer, raw: Any) -> None:
    api.faults.delay(0.4, path=SVC, count=1)
    started = time.monotonic()
    assert raw("GET", SVC).status == 200
    assert time.monotonic() - started >= 0.4


def test_watch_dropped_after_n_events(api: ApiServer, raw: Any) -> None:
    for i in range(3):
        raw("POST", CM, {"metadata": {"name": f"c{i}"}})
    api.faults.drop_watch(after_events=2, path=CM)
    started = time.monotonic()
    _, events = raw.watch(f"{CM}?watch=1", timeout=5)
    assert len(events) == 2
    assert time.monotonic() - started < 2  # ended by the server, not by our timeout


def test_watch_dropped_after_seconds(api: ApiServer, raw: Any) -> None:
    api.faults.drop_watch(after_seconds=0.3, count=1)
    started = time.monotonic()
    raw.watch(f"{CM}?watch=1", timeout=5)
    assert 0.25 < time.monotonic() - started < 2
    started = time.monotonic()
    raw.watch(f"{CM}?watch=1&timeoutSeconds=1", timeout=5)  # the rule was used up
    assert time.monotonic() - started > 0.9


def test_watch_gone_gives_410_error_event(api: ApiServer, raw: Any) -> None:
    api.faults.watch_gone(count=1)
    _, events = raw.watch(f"{CM}?watch=1&resourceVersion=1", timeout=3)
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_kubernetes_client_watch_sees_injected_410(api: ApiServer, core: client.CoreV1Api) -> None:
    from kubernetes import watch

    api.faults.watch_gone(count=1)
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version="1", timeout_seconds=1
        ):
            pass
    assert err.value.status == 410


def test_outage_503(api: ApiServer, raw: Any) -> None:
    rule = api.faults.outage("503")
    assert raw("GET", "/api").status == 503
    assert raw("GET", SVC).status == 503
    api.faults.remove(rule)
    assert raw("GET", SVC).status == 200


def test_outage_reset(api: ApiServer, raw: Any) -> None:
    api.faults.outage("reset", count=1)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        raw("GET", SVC)
    assert raw("GET", SVC).status == 200


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except ConnectionRefusedError:
        return False


def test_outage_refuse_closes_listener_and_live_watches(
    api: ApiServer, raw: Any, wait_for: Any
) -> None:
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(raw.watch(f"{CM}?watch=1", timeout=5)))
    reader.start()
    wait_for(lambda: any(r.verb == "watch" for r in api.requests()), what="the watch")
    started = time.monotonic()
    rule = api.faults.outage("refuse")
    reader.join(timeout=5)
    assert got and time.monotonic() - started < 2
    assert not _connects(api.port)
    api.faults.remove(rule)
    assert _connects(api.port)
    assert raw("GET", SVC).status == 200


def test_source_targeted_outage_hits_only_that_source(api: ApiServer, http_to: Any) -> None:
    node_sock = socket.socket()
    node_sock.bind(("127.0.0.1", 0))
    node_sock.listen(16)
    node_port = node_sock.getsockname()[1]
    api.serve_socket(node_sock, "node-a")
    node, host = http_to(node_port, token="speaker"), http_to(api.port, token="speaker")
    assert node("GET", SVC).status == 200
    assert [r.source for r in api.requests(identity="speaker")] == ["node-a"]

    api.faults.error(500, source="node-a")
    assert node("GET", SVC).status == 500
    assert host("GET", SVC).status == 200
    api.faults.clear()

    api.faults.outage("refuse", source="node-a")
    assert not _connects(node_port)
    assert host("GET", SVC).status == 200
    api.faults.clear()
    assert node("GET", SVC).status == 200  # re-opened on the same address


def test_request_log_records_identity_source_verb_status(
    api: ApiServer, raw: Any, http_to: Any
) -> None:
    raw("GET", f"{SVC}/missing")
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    conn.request("GET", SVC, headers={"User-Agent": "curl-ish/1"})
    conn.getresponse().read()
    conn.close()
    (mine,) = api.requests(identity="raw")
    assert (mine.source, mine.verb, mine.method, mine.path, mine.status) == (
        "host",
        "get",
        "GET",
        f"{SVC}/missing",
        404,
    )
    assert [r.verb for r in api.requests(identity="curl-ish/1")] == ["list"]


def test_request_log_file_gets_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_to: Any
) -> None:
    log = tmp_path / "requests.jsonl"
    monkeypatch.setenv("LBCTL_REQUEST_LOG", str(log))
    with ApiServer() as api:
        http_to(api.port, token="controller")("POST", CM, {"metadata": {"name": "x"}})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["identity"], r["verb"], r["status"]) for r in lines] == [
        ("controller", "create", 201)
    ]


def test_fault_selector_rejects_unknown_keys(api: ApiServer) -> None:
    with pytest.raises(ValueError, match="outage mode"):
        api.faults.outage("explode")


def test_standalone_server_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lbctl.lab.apiserver",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("apiserver listening url=http://127.0.0.1:")
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server == line.split("url=")[1].strip()
        port = int(server.rsplit(":", 1)[1])
        assert _connects(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "apiserver stopped" in out
    assert "Traceback" not in err, err


def test_stop_during_an_injected_delay_ends_the_request_and_leaks_nothing() -> None:
    server = ApiServer(bookmark_interval=0.3)
    server.start()
    rule = server.faults.delay(30, path=SVC)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    result: list[BaseException | int] = []

    def call() -> None:
        try:
            conn.request("GET", SVC)
            result.append(conn.getresponse().status)
        except (OSError, http.client.HTTPException) as err:
            result.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while not server.faults.hits(rule) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling for the request to arrive, bounded by the deadline
    assert server.faults.hits(rule) == 1
    started = time.monotonic()
    server.stop()
    caller.join(10)
    conn.close()
    gc.collect()  # a transport left open would raise ResourceWarning here, under -W error
    assert result, "the delayed request never ended"
    assert time.monotonic() - started < 5


def test_request_log_keeps_only_the_newest_records_in_memory(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "log.jsonl", keep=3)
    for i in range(5):
        log.add(RequestRecord(float(i), "who", "host", "get", "GET", f"/p{i}", "", 200, 0.0))
    assert [r.path for r in log.records()] == ["/p2", "/p3", "/p4"]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 5
