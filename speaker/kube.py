"""The only module of the speaker that talks to the Kubernetes API outside kopf's watches: the
`lbctl.io/AnnouncedL2` and `lbctl.io/AnnouncedBGP` conditions on a Service's status (a
strategic-merge patch keyed on the condition type, never `status.loadBalancer`), Events, the
BGP session states on its own Node (one annotation), a BGP peer's password Secret (read only),
and the freshness probe (`GET /version`).
Called by speaker.agent from worker threads; one lbctl.restclient client (not the `kubernetes`
package: 15 MiB of RSS).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import socket
from datetime import UTC, datetime
from typing import Any

import urllib3

from lbctl.core.timefmt import micro_time, rfc3339
from lbctl.restclient import ApiError, RestClient

log = logging.getLogger("lbctl.speaker.kube")
STRATEGIC = "application/strategic-merge-patch+json"
TIMEOUT = (2.0, 5.0)  # connect, read for writes
VERSION_TIMEOUT = 1.0  # the freshness probe (issue 9: a 1 s timeout every 2 s)
COMPONENT = "lbctl-speaker"
CORE = ("api", "v1")
Body = dict[str, Any]
_FAILURES = (ApiError, urllib3.exceptions.HTTPError, OSError)


class KubeError(Exception):
    """A request that failed, with what was being done and the HTTP status (0: no answer)."""

    def __init__(self, doing: str, status: int, detail: str = "") -> None:
        super().__init__(f"{doing}: HTTP {status} {detail}".rstrip())
        self.status = status


def _wrap(doing: str, err: Exception) -> KubeError:
    if isinstance(err, ApiError):
        return KubeError(doing, err.status, err.reason)
    return KubeError(doing, 0, f"{type(err).__name__}: {err}")


class Kube:
    """Writes of one speaker (its ServiceAccount), through one client."""

    def __init__(self, api: RestClient, node: str) -> None:
        self.api = api
        self.node = node
        self.host = socket.gethostname()

    def api_reachable(self) -> bool:
        """One cheap GET /version; True when it answered in time."""
        try:
            self.api.request("GET", ("version",), timeout=VERSION_TIMEOUT)
        except _FAILURES:
            return False
        return True

    def patch_condition(self, namespace: str, name: str, condition: Body) -> None:
        """Merge `condition` into the Service's status.conditions by its type."""
        doing = f"patching condition {condition['type']} of service {namespace}/{name}"
        patch = {"status": {"conditions": [condition]}}
        try:
            self.api.request(
                "PATCH", (*CORE, "namespaces", namespace, "services", name, "status"), patch,
                content_type=STRATEGIC, timeout=TIMEOUT,
            )  # fmt: skip
        except _FAILURES as err:
            raise _wrap(doing, err) from err

    def annotate_node(self, key: str, value: str) -> None:
        """Set one annotation on this speaker's own Node (a merge patch of that key only)."""
        doing = f"annotating node {self.node} with {key}"
        patch = {"metadata": {"annotations": {key: value}}}
        try:
            self.api.request("PATCH", (*CORE, "nodes", self.node), patch, content_type=STRATEGIC,
                             timeout=TIMEOUT)  # fmt: skip
        except _FAILURES as err:
            raise _wrap(doing, err) from err

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret has no such key. The value is
        never logged nor put in an error."""
        doing = f"reading secret {namespace}/{name}"
        try:
            path = (*CORE, "namespaces", namespace, "secrets", name)
            secret = json.loads(self.api.request("GET", path, timeout=TIMEOUT))
        except _FAILURES as err:
            raise _wrap(doing, err) from err
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise KubeError(doing, 0, f"key {key} is not base64 of UTF-8 text") from None

    def post_event(
        self, namespace: str, name: str, *, type_: str, reason: str, message: str
    ) -> None:
        """An Event on a Service; its uid (which `kubectl describe` matches Events by) is read
        first: the speaker keeps no uid per Service (Events are rare, 10,000 uids ~0.9 MiB)."""
        doing = f"posting event {reason} on service {namespace}/{name}"
        try:
            path = (*CORE, "namespaces", namespace, "services", name)
            service = json.loads(self.api.request("GET", path, timeout=TIMEOUT))
        except (*_FAILURES, ValueError) as err:
            raise _wrap(f"reading the uid of service {namespace}/{name}", err) from err
        uid = str((service.get("metadata") or {}).get("uid", ""))
        now = datetime.now(UTC)
        body: Body = {
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"kind": "Service", "apiVersion": "v1", "namespace": namespace,
                               "name": name, "uid": uid},
            "type": type_, "reason": reason, "message": message,
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT, "reportingInstance": self.node,
            "action": reason, "eventTime": micro_time(now), "firstTimestamp": rfc3339(now),
            "lastTimestamp": rfc3339(now), "count": 1,
        }  # fmt: skip
        try:
            self.api.request("POST", (*CORE, "namespaces", namespace, "events"), body,
                             timeout=TIMEOUT)  # fmt: skip
        except _FAILURES as err:
            raise _wrap(doing, err) from err
