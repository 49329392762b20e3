"""controller.kube against the real API server: its requests share the client's connections."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from controller_bed import bed

from controller.events import EventReason, EventType, EventWrite, ObjectRef
from controller.kube import Kube
from lbctl.kubeclient import api_client_for
from lbctl.lab.controlplane import ControlPlane


def test_events_posted_one_after_another_reuse_one_connection(
    control_plane: ControlPlane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # urllib3 logs each connection it opens; an answer left unread keeps its connection out of
    # the pool, and every later request opened (and TLS-handshook) a new one.
    with bed(control_plane, tmp_path) as b:
        ns = b.namespace("events")
        kube = Kube(api_client_for(str(b.kubeconfig("events")), retries=False))
        try:
            caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
            for i in range(10):
                ref = ObjectRef("Service", ns, f"svc-{i}")
                kube.post_event(EventWrite(ref, EventType.NORMAL, EventReason.IP_ALLOCATED, "m"))
        finally:
            kube.api_client.close()
        opened = [r for r in caplog.records if "Starting new HTTPS connection" in r.getMessage()]
        assert len(opened) == 1, [r.getMessage() for r in opened]
        assert len(b.events(ns)) == 10
