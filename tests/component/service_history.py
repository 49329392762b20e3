"""Every ingress IP list each Service had, in order: a watch of Services (as the admin, straight
to the API server) started before a test creates any, for the controller's component tests."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from lbctl.lab.procs import wait_for

WATCH_SECONDS = 60  # the API server ends a watch after this; the recorder resumes from its RV
SYNC_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def ingress_ips(body: dict[str, Any] | None) -> list[str]:
    if body is None:
        return []
    ingress = ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [e["ip"] for e in ingress if "ip" in e]


class ServiceHistory:
    """Records, per Service "ns/name" whose namespace `mine` accepts, each distinct ingress IP
    list in the order the API server applied the changes (a watch delivers every change, in
    order, from the resourceVersion it starts at)."""

    def __init__(self, core: client.CoreV1Api, mine: Callable[[str], bool]) -> None:
        self.core, self.mine = core, mine
        self._lock = threading.Lock()
        self._seqs: dict[str, list[list[str]]] = {}
        self._rvs: dict[str, str] = {}  # the last resourceVersion seen of each Service
        self._error: str | None = None
        self._stop = threading.Event()
        self._resp: Any = None
        listed: Any = core.list_service_for_all_namespaces(_preload_content=False)
        self._rv = str(json.loads(listed.data)["metadata"]["resourceVersion"])
        self._thread = threading.Thread(target=self._main, name="service-history", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self._resp = self.core.list_service_for_all_namespaces(
                    watch=True,
                    resource_version=self._rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _preload_content=False,
                )
                self._read(self._resp)
            except Exception as err:  # the loop boundary: any failure ends the record
                if not self._stop.is_set():
                    self._error = f"watching Services: {err!r}"
                return

    def _read(self, resp: Any) -> None:
        buffer = b""
        for chunk in resp.stream(amt=None, decode_content=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self._record(json.loads(line))

    def _record(self, event: dict[str, Any]) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":  # 410: the record would have a gap; say so instead of guessing
            raise RuntimeError(f"watch error: {obj.get('message')}")
        meta = obj["metadata"]
        self._rv = meta["resourceVersion"]
        if kind in ("BOOKMARK", "DELETED") or not self.mine(meta["namespace"]):
            return
        key = f"{meta['namespace']}/{meta['name']}"
        with self._lock:
            self._rvs[key] = meta["resourceVersion"]
            seq = self._seqs.setdefault(key, [])
            ips = ingress_ips(obj)
            if not seq or seq[-1] != ips:
                seq.append(ips)

    def history(self) -> dict[str, list[list[str]]]:
        """The record so far, once it has caught up with every Service as it is now."""

        def caught_up() -> bool:
            if self._error is not None:
                raise AssertionError(self._error)
            got: Any = self.core.list_service_for_all_namespaces(_preload_content=False)
            now = {
                f"{m['namespace']}/{m['name']}": m["resourceVersion"]
                for m in (s["metadata"] for s in json.loads(got.data)["items"])
                if self.mine(m["namespace"])
            }
            with self._lock:
                return all(self._rvs.get(key) == rv for key, rv in now.items())

        wait_for(caught_up, SYNC_TIMEOUT, "the Service history to catch up")
        with self._lock:
            return {key: [list(ips) for ips in seq] for key, seq in self._seqs.items()}

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._thread.is_alive() and time.monotonic() < deadline:
            resp = self._resp  # the watch open now (one may open as we stop)
            if resp is not None:
                with contextlib.suppress(Exception):
                    resp.shutdown()  # unblocks the read in the thread
            self._thread.join(timeout=0.2)
        if self._thread.is_alive():
            raise RuntimeError("the Service history's watch did not stop")
