"""The bed's API server at benchmark scale: thousands of Services stay cheap to write and read.

Bounds are generous (a loaded CI machine must not fail them); the figures are printed (-s).
Before the allocation index, the 5th thousand of creates took ~9x the 1st; now ~1x.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lbctl.lab.api import defaulting
from lbctl.lab.apiserver import ApiServer

COUNT, CHUNK = 5_000, 1_000
SVC = "/api/v1/namespaces/default/services"


def lb_service(i: int) -> dict[str, Any]:
    """What large tests create: single-stack IPv6 (the /24 of IPv4 holds 253), no node ports."""
    spec = {
        "type": "LoadBalancer",
        "ipFamilies": ["IPv6"],
        "allocateLoadBalancerNodePorts": False,
        "ports": [{"port": 80}],
        "selector": {"app": f"app-{i}"},
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s-{i}"}, "spec": spec}


class Conn:
    """One keep-alive connection, so the figures are the server's, not TCP setup's."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def __call__(self, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": ctype or "application/json", "Authorization": "Bearer scale"}
        self.http.request(method, path, body=data, headers=headers)
        resp = self.http.getresponse()
        raw = resp.read()
        assert resp.status < 300, (method, path, resp.status, raw[:300])
        return json.loads(raw)


@pytest.fixture(scope="module")
def filled() -> Iterator[tuple[ApiServer, Conn, int, list[float]]]:
    """A server holding COUNT Services created over HTTP: (server, conn, rv before, chunk times)."""
    with ApiServer() as api:
        conn = Conn(api.port)
        before = int(conn("GET", SVC)["metadata"]["resourceVersion"])
        chunks = []
        for start in range(0, COUNT, CHUNK):
            began = time.perf_counter()
            for i in range(start, start + CHUNK):
                conn("POST", SVC, lb_service(i))
            chunks.append(time.perf_counter() - began)
        print("creates per 1000:", " ".join(f"{t:.2f}s" for t in chunks))
        yield api, conn, before, chunks
        conn.http.close()


def test_creates_stay_linear_in_the_service_count(filled: Any) -> None:
    _, _, _, chunks = filled
    first, last = chunks[0], chunks[-1]
    print(f"last/first = {last / first:.2f}")
    # Quadratic allocation made this ~9; 3x plus a quarter second absorbs a noisy machine.
    assert last <= 3 * first + 0.25


def test_thousands_of_services_get_distinct_ipv6_cluster_ips(filled: Any) -> None:
    _, conn, _, _ = filled
    items = conn("GET", SVC)["items"]
    ips = [ipaddress.ip_address(s["spec"]["clusterIP"]) for s in items]
    assert len(items) == COUNT
    assert len(set(ips)) == COUNT
    v6 = ipaddress.ip_network(defaulting.DEFAULT_SERVICE_CIDRS[1])
    assert all(ip in v6 for ip in ips)
    assert all("nodePort" not in p for s in items for p in s["spec"]["ports"])


def test_list_of_thousands_is_fast(filled: Any) -> None:
    _, conn, _, _ = filled
    began = time.perf_counter()
    listed = conn("GET", SVC)
    took = time.perf_counter() - began
    page = conn("GET", f"{SVC}?limit=500")
    print(f"list of {len(listed['items'])}: {took * 1000:.0f} ms")
    assert len(listed["items"]) == COUNT
    assert page["metadata"]["remainingItemCount"] == COUNT - 500
    assert took < 3.0


def test_watch_replaying_thousands_from_a_resource_version_is_fast(filled: Any) -> None:
    api, _, before, _ = filled
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    began = time.perf_counter()
    try:
        conn.request("GET", f"{SVC}?watch=1&resourceVersion={before}&timeoutSeconds=5")
        resp = conn.getresponse()
        names = [json.loads(resp.readline())["object"]["metadata"]["name"] for _ in range(COUNT)]
    finally:
        conn.close()
    took = time.perf_counter() - began
    print(f"watch replay of {COUNT}: {took * 1000:.0f} ms")
    assert names == [f"s-{i}" for i in range(COUNT)]
    assert took < 5.0


def test_writes_at_scale_cost_what_they_cost_at_the_start(filled: Any) -> None:
    _, conn, _, chunks = filled
    merge = "application/merge-patch+json"
    began = time.perf_counter()
    for i in range(200):
        status = {"loadBalancer": {"ingress": [{"ip": f"2001:db8:9::{i + 1:x}"}]}}
        conn("PATCH", f"{SVC}/s-{i}/status", {"status": status}, merge)
        conn("PATCH", f"{SVC}/s-{i}", {"metadata": {"labels": {"seen": "yes"}}}, merge)
    per_write = (time.perf_counter() - began) / 400
    per_create = chunks[0] / CHUNK
    print(
        f"status+label patch: {per_write * 1000:.2f} ms each; early create {per_create * 1000:.2f}"
    )
    assert per_write <= 3 * per_create + 0.001
