"""Conformance of list filtering: label selectors, field selectors, limit/continue paging."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

LABELS = {
    "a": {"app": "web", "tier": "front"},
    "b": {"app": "web", "tier": "back"},
    "c": {"app": "db"},
    "d": {},
}


@pytest.fixture
def labelled(core: client.CoreV1Api) -> None:
    for name, labels in LABELS.items():
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        pytest.param("app=web", "ab", id="equals"),
        pytest.param("app==web", "ab", id="double-equals"),
        pytest.param("app!=web", "cd", id="not-equals-includes-unlabelled"),
        pytest.param("tier in (front,back)", "ab", id="in"),
        pytest.param("tier notin (front)", "bcd", id="notin-includes-unlabelled"),
        pytest.param("tier", "ab", id="exists"),
        pytest.param("!tier", "cd", id="does-not-exist"),
        pytest.param("app=web,tier=back", "b", id="and"),
        pytest.param("app in (web, db),!tier", "c", id="set-and-not-exists"),
        pytest.param("", "abcd", id="empty-matches-all"),
    ],
)
def test_label_selector(core: client.CoreV1Api, labelled: None, selector: str, names: str) -> None:
    found = core.list_namespaced_config_map("default", label_selector=selector)
    assert "".join(sorted(i.metadata.name for i in found.items)) == names


def test_malformed_label_selector_is_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", label_selector="a in (b")
    assert err.value.status == 400


def test_field_selector_on_name_and_namespace(core: client.CoreV1Api, labelled: None) -> None:
    by_name = core.list_namespaced_config_map("default", field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_name.items] == ["b"]
    not_name = core.list_config_map_for_all_namespaces(
        field_selector="metadata.name!=b,metadata.namespace=default"
    )
    assert [i.metadata.name for i in not_name.items] == ["a", "c", "d"]


def test_field_selector_on_event_involved_object(core: client.CoreV1Api) -> None:
    for name, kind in (("e1", "Service"), ("e2", "Pod"), ("e3", "Service")):
        core.create_namespaced_event(
            "default",
            {
                "metadata": {"name": name},
                "involvedObject": {
                    "kind": kind,
                    "name": "web" if name != "e3" else "db",
                    "namespace": "default",
                    "uid": f"uid-{name}",
                },
                "reason": "Tested",
                "message": "m",
                "type": "Normal",
            },
        )
    found = core.list_namespaced_event(
        "default", field_selector="involvedObject.kind=Service,involvedObject.name=web"
    )
    assert [e.metadata.name for e in found.items] == ["e1"]


def test_unsupported_field_label_is_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", field_selector="data.x=1")
    assert err.value.status == 400


def test_limit_and_continue_page_through_everything(core: client.CoreV1Api, labelled: None) -> None:
    pages: list[list[str]] = []
    token = None
    for _ in range(10):
        page = core.list_namespaced_config_map("default", limit=3, _continue=token)
        pages.append([i.metadata.name for i in page.items])
        token = page.metadata._continue
        if not token:
            break
    assert pages == [["a", "b", "c"], ["d"]]


def test_first_page_reports_remaining_items(raw: Any, labelled: None) -> None:
    reply = raw("GET", "/api/v1/namespaces/default/configmaps?limit=1")
    assert len(reply.body["items"]) == 1
    assert reply.body["metadata"]["remainingItemCount"] == 3
    assert reply.body["metadata"]["continue"]
