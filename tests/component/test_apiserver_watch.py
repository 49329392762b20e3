"""Conformance of watch: resume by resourceVersion, timeouts, bookmarks, 410 Gone, filtering."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kubernetes import client, watch

from lbctl.lab.api.store import Store
from lbctl.lab.apiserver import ApiServer

SVC = "/api/v1/namespaces/default/services"


def test_watch_resumes_after_rv_without_replaying(core: client.CoreV1Api, svc: Any) -> None:
    core.create_namespaced_service("default", svc("old"))
    rv = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", svc("new"))
    w = watch.Watch()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(
            core.list_namespaced_service, "default", resource_version=rv, timeout_seconds=1
        )
    ]
    assert seen == [("ADDED", "new")]


def test_watch_without_rv_starts_with_current_objects(
    raw: Any, core: client.CoreV1Api, svc: Any
) -> None:
    core.create_namespaced_service("default", svc("a"))
    headers, events = raw.watch(f"{SVC}?watch=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    assert headers["content-type"].startswith("application/json")


def test_watch_ends_after_timeout_seconds(raw: Any) -> None:
    started = time.monotonic()
    _, events = raw.watch(f"{SVC}?watch=true&timeoutSeconds=1", timeout=5)
    took = time.monotonic() - started
    assert events == []
    assert 0.9 < took < 3


def test_watch_sees_modified_and_deleted_with_their_rvs(
    raw: Any, core: client.CoreV1Api, svc: Any
) -> None:
    made = core.create_namespaced_service("default", svc("a"))
    rv = made.metadata.resource_version
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_service("a", "default")
    _, events = raw.watch(f"{SVC}?watch=1&resourceVersion={rv}&timeoutSeconds=1", until=2)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert int(rv) < rvs[0] < rvs[1]


def test_watch_sends_bookmarks_when_allowed(raw: Any) -> None:
    _, events = raw.watch(f"{SVC}?watch=1&allowWatchBookmarks=true&timeoutSeconds=1", until=1)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["kind"] == "Service"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > 0


def test_no_bookmarks_unless_asked(raw: Any) -> None:
    _, events = raw.watch(f"{SVC}?watch=1&timeoutSeconds=1")
    assert events == []


def test_send_initial_events_ends_with_the_initial_events_end_bookmark(
    raw: Any, core: client.CoreV1Api, svc: Any
) -> None:
    core.create_namespaced_service("default", svc("a"))
    core.create_namespaced_service("default", svc("b"))
    path = (
        f"{SVC}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
        "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    )
    _, events = raw.watch(path, until=3)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    mark = events[2]["object"]["metadata"]
    assert mark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(mark["resourceVersion"]) >= int(events[1]["object"]["metadata"]["resourceVersion"])


def test_send_initial_events_requires_not_older_than(raw: Any) -> None:
    reply = raw("GET", f"{SVC}?watch=1&sendInitialEvents=true")
    assert reply.status == 422


def test_too_old_rv_is_a_410_error_event(http_to: Any) -> None:
    with ApiServer(history=3) as api:
        raw = http_to(api.port)
        first = raw("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c0"}})
        for i in range(1, 6):
            raw("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}})
        rv = first.body["metadata"]["resourceVersion"]
        path = f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
        _, events = raw.watch(path, timeout=3)
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert "too old resource version" in status["message"]


def test_recent_rv_within_history_still_resumes(http_to: Any) -> None:
    with ApiServer(history=3) as api:
        raw = http_to(api.port)
        for i in range(5):
            made = raw(
                "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}}
            )
        rv = int(made.body["metadata"]["resourceVersion"]) - 1
        path = (
            f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        )
        _, events = raw.watch(path)
    assert [e["object"]["metadata"]["name"] for e in events] == ["c4"]


def test_label_selector_watch_sees_objects_enter_and_leave(
    raw: Any, core: client.CoreV1Api, svc: Any
) -> None:
    rv = core.create_namespaced_service("default", svc("a")).metadata.resource_version
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"tier": "web"}}})
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"tier": None}}})
    path = f"{SVC}?watch=1&resourceVersion={rv}&labelSelector=tier%3Dweb&timeoutSeconds=1"
    _, events = raw.watch(path, until=3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_namespaced_watch_ignores_other_namespaces(
    raw: Any, core: client.CoreV1Api, svc: Any
) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    rv = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("other", svc("x"))
    core.create_namespaced_service("default", svc("y"))
    _, events = raw.watch(f"{SVC}?watch=1&resourceVersion={rv}&timeoutSeconds=1", until=2)
    assert [e["object"]["metadata"]["name"] for e in events] == ["y"]
    _, every = raw.watch(f"/api/v1/services?watch=1&resourceVersion={rv}&timeoutSeconds=1", until=2)
    assert [e["object"]["metadata"]["name"] for e in every] == ["x", "y"]


def test_live_watch_receives_later_writes(
    api: ApiServer, raw: Any, core: client.CoreV1Api, svc: Any, wait_for: Any
) -> None:
    got: list[Any] = []
    rv = core.list_namespaced_service("default").metadata.resource_version

    def reader() -> None:
        got.extend(raw.watch(f"{SVC}?watch=1&resourceVersion={rv}", until=1, timeout=5)[1])

    thread = threading.Thread(target=reader)
    thread.start()
    wait_for(lambda: api.requests(identity="raw"), what="the watch to be open")
    core.create_namespaced_service("default", svc("live"))
    thread.join(timeout=5)
    assert [e["object"]["metadata"]["name"] for e in got] == ["live"]


def _read_until(resp: Any, want: int, deadline: float) -> tuple[list[dict[str, Any]], int]:
    """Read watch lines until `want` non-bookmark events or the deadline: (events, bookmarks)."""
    events: list[dict[str, Any]] = []
    bookmarks = 0
    while len(events) < want and time.monotonic() < deadline:
        try:
            line = resp.readline()
        except TimeoutError:
            break
        if not line:
            break
        if line.strip():
            event = json.loads(line)
            if event["type"] == "BOOKMARK":
                bookmarks += 1
            else:
                events.append(event)
    return events, bookmarks


def test_watch_with_due_bookmarks_still_delivers_a_burst(http_to: Any, wait_for: Any) -> None:
    """Events queued while a bookmark is due are sent (they once made the stream spin)."""
    with ApiServer(bookmark_interval=0.001) as api:
        raw = http_to(api.port)
        conn = raw.conn(timeout=5)
        try:
            conn.request(
                "GET",
                f"{SVC}?watch=1&allowWatchBookmarks=true&resourceVersion="
                f"{api.call(lambda s: s.rv)}&timeoutSeconds=60",
                headers={"Authorization": "Bearer raw"},
            )
            resp = conn.getresponse()
            wait_for(lambda: api.requests(identity="raw"), what="the watch to be open")
            # All 500 in one turn of the server loop: they queue up while a bookmark falls due.
            api.call(_create_services, 500)
            events, bookmarks = _read_until(resp, 500, time.monotonic() + 5)
        finally:
            conn.close()
    names = [e["object"]["metadata"]["name"] for e in events]
    assert names == [f"burst-{i}" for i in range(500)]
    print(f"500 events with {bookmarks} bookmarks in between")


def _create_services(store: Store, count: int) -> None:
    res = store.registry.by_key("v1/services")
    for i in range(count):
        body = {"metadata": {"name": f"burst-{i}"}, "spec": {"ipFamilies": ["IPv6"]}}
        store.create(res, "default", body)
