"""kopf's settings for lbctl's level-based operators, which keep no state in the objects they
watch; shared by controller.runner and speaker.runner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

WORKER_LIMIT = 20  # concurrent per-object workers in kopf (events of one object stay ordered)
WORKER_IDLE = 0.001  # seconds a per-object worker waits for another event before it exits


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf compares each event's body with a stored "essence" for on.create/update/field
    handlers; we register none of those (only on.event), so nothing is built, read or stored.
    kopf's default deep-copies every Service body on every event to build it."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # Events only through kube.py
    settings.scanning.disabled = True  # no CRD/namespace scanning: core resources only
    settings.persistence.diffbase_storage = NoDiffBase()
    # Bounded watches: a silently dead connection is noticed within minutes, not never.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # kopf keeps a queue, a worker and the decoded body for every object with an event not yet
    # handled. Our handlers only decide and queue the writes (controller.workqueue), so a worker
    # is done in microseconds and must then leave at once: with kopf's default 5 s idle wait, a
    # burst of 10,000 Services would keep 10,000 workers and bodies alive, and RSS keeps that
    # high-water mark (docs/performance.md, Controller memory).
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = WORKER_IDLE
    return settings
