"""Conformance of the bed's API server: object metadata, resourceVersion, CRUD errors, deletion."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException


def test_created_object_gets_uid_rv_timestamp_and_generation(
    core: client.CoreV1Api, svc: Any
) -> None:
    made = core.create_namespaced_service("default", svc("web"))
    meta = made.metadata
    assert re.fullmatch(r"[0-9a-f-]{36}", meta.uid)
    assert int(meta.resource_version) > 0
    assert meta.creation_timestamp is not None
    assert meta.generation == 1
    assert meta.namespace == "default"


def test_resource_versions_form_one_global_increasing_counter(
    core: client.CoreV1Api, svc: Any
) -> None:
    a = core.create_namespaced_service("default", svc("a"))
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    b = core.create_namespaced_service("default", svc("b"))
    rvs = [int(o.metadata.resource_version) for o in (a, cm, b)]
    assert rvs == sorted(set(rvs))
    listed = core.list_namespaced_service("default")
    assert int(listed.metadata.resource_version) >= rvs[-1]


def test_namespace_comes_from_the_url(raw: Any) -> None:
    made = raw("POST", "/api/v1/namespaces/kube-system/configmaps", {"metadata": {"name": "x"}})
    assert made.status == 201
    assert made.body["metadata"]["namespace"] == "kube-system"
    assert raw("GET", "/api/v1/namespaces/kube-system/configmaps/x").status == 200


def test_mismatched_namespace_in_body_is_rejected(raw: Any) -> None:
    body = {"metadata": {"name": "x", "namespace": "default"}}
    reply = raw("POST", "/api/v1/namespaces/kube-system/configmaps", body)
    assert reply.status == 400


def test_generate_name_appends_a_random_suffix(core: client.CoreV1Api) -> None:
    made = [
        core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
        for _ in range(3)
    ]
    names = {m.metadata.name for m in made}
    assert len(names) == 3
    assert all(re.fullmatch(r"cfg-[a-z0-9]{5}", n) for n in names)


def test_missing_object_is_a_404_status(raw: Any) -> None:
    reply = raw("GET", "/api/v1/namespaces/default/services/nope")
    assert reply.status == 404
    assert reply.body["kind"] == "Status"
    assert reply.body["reason"] == "NotFound"
    assert reply.body["details"] == {"name": "nope", "group": "", "kind": "services"}


def test_creating_twice_is_409_already_exists(core: client.CoreV1Api, svc: Any) -> None:
    core.create_namespaced_service("default", svc("web"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("default", svc("web"))
    assert err.value.status == 409
    assert '"reason":"AlreadyExists"' in err.value.body


def test_creating_in_a_missing_namespace_is_404(core: client.CoreV1Api, svc: Any) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("ghost", svc("web"))
    assert err.value.status == 404


def test_put_with_stale_resource_version_is_409_conflict(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    first.data = {"a": "2"}
    core.replace_namespaced_config_map("c", "default", first)
    first.data = {"a": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", "default", first)
    assert err.value.status == 409
    assert '"reason":"Conflict"' in err.value.body
    assert core.read_namespaced_config_map("c", "default").data == {"a": "2"}


def test_put_replaces_the_object_and_bumps_rv(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    made.data = {"b": "2"}
    done = core.replace_namespaced_config_map("c", "default", made)
    assert done.data == {"b": "2"}
    assert int(done.metadata.resource_version) > int(made.metadata.resource_version)
    assert done.metadata.uid == made.metadata.uid


def test_noop_write_keeps_the_resource_version(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    same = core.patch_namespaced_config_map("c", "default", {"data": {"a": "1"}})
    assert same.metadata.resource_version == made.metadata.resource_version


def test_generation_bumps_on_spec_change_only(core: client.CoreV1Api, svc: Any) -> None:
    core.create_namespaced_service("default", svc("web"))
    labelled = core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    assert core.patch_namespaced_service_status("web", "default", status).metadata.generation == 1
    changed = core.patch_namespaced_service("web", "default", {"spec": {"selector": {"app": "x"}}})
    assert changed.metadata.generation == 2


def test_finalizers_hold_deletion_until_removed(core: client.CoreV1Api, svc: Any) -> None:
    body = svc("web")
    body["metadata"]["finalizers"] = ["lbctl.io/test"]
    core.create_namespaced_service("default", body)
    core.delete_namespaced_service("web", "default")
    held = core.read_namespaced_service("web", "default")
    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_service(
            "web", "default", {"metadata": {"finalizers": ["lbctl.io/test", "other"]}}
        )
    assert err.value.status == 422
    core.patch_namespaced_service("web", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_service("web", "default")
    assert gone.value.status == 404


def test_deleting_a_namespace_deletes_its_objects(core: client.CoreV1Api, svc: Any) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_service("doomed", svc("web"))
    core.delete_namespace("doomed")
    assert core.list_namespaced_service("doomed").items == []
    assert "doomed" not in {n.metadata.name for n in core.list_namespace().items}


def test_namespace_waits_for_finalized_objects(core: client.CoreV1Api, svc: Any) -> None:
    core.create_namespace({"metadata": {"name": "slow"}})
    body = svc("web")
    body["metadata"]["finalizers"] = ["lbctl.io/test"]
    core.create_namespaced_service("slow", body)
    core.delete_namespace("slow")
    assert core.read_namespace("slow").status.phase == "Terminating"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("slow", {"metadata": {"name": "late"}})
    assert err.value.status == 403
    core.patch_namespaced_service("web", "slow", {"metadata": {"finalizers": None}})
    assert "slow" not in {n.metadata.name for n in core.list_namespace().items}


def test_cluster_scoped_objects_have_no_namespace(core: client.CoreV1Api) -> None:
    node = core.create_node({"metadata": {"name": "node-a", "namespace": "x"}})
    assert node.metadata.namespace is None
    assert [n.metadata.name for n in core.list_node().items] == ["node-a"]


def test_unknown_resource_is_404(raw: Any) -> None:
    assert raw("GET", "/api/v1/namespaces/default/widgets").status == 404
    assert raw("GET", "/apis/example.com/v1/widgets").status == 404
