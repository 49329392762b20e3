"""The Kubernetes client and kopf set-up shared by the controller and the speaker: one
ApiClient from a kubeconfig or in-cluster credentials, the same endpoint for kopf's watches, and
kopf's settings for level-based operators that keep no state in the objects they watch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import kopf
from kubernetes import client, config

# Connections kept open to the API server: one per thread that can call it at once. The
# controller has 12: controller.writers' WORKERS (8) Service writers and EVENT_WORKERS (2) Event
# posters, and the 2 threads of controller.lease.KubeLeaseStore; the speaker fewer
# (speaker.conditions' 4 CONDITION_WRITERS and a few single calls). The client's default is 5 per
# CPU, 10 on 2 cores: urllib3 then logs "Connection pool is full", drops the extra connections
# and each later request on them pays a new TLS handshake.
CONNECTION_POOL_SIZE = 12


def api_client_for(kubeconfig: str | None, *, retries: bool | None = None) -> client.ApiClient:
    """A client from the given kubeconfig, else in-cluster credentials, else the default file.
    `retries=False`: urllib3 makes no retries of its own (its default re-sends a PUT after a read
    timeout); for callers whose own loop is the retry."""
    # The kubernetes package's config loaders are untyped.
    new_client = cast(Callable[..., client.ApiClient], config.new_client_from_config)
    cfg = client.Configuration()
    cfg.retries = retries  # a Configuration field: the client's pool is built with it
    cfg.connection_pool_maxsize = CONNECTION_POOL_SIZE  # likewise
    if kubeconfig:
        return new_client(config_file=kubeconfig, client_configuration=cfg)
    try:
        cast(Callable[..., None], config.load_incluster_config)(client_configuration=cfg)
    except config.ConfigException:
        return new_client(client_configuration=cfg)
    return client.ApiClient(cfg)


def connection_info(api_client: client.ApiClient) -> kopf.ConnectionInfo:
    """The same endpoint and credentials for kopf's watches as for our writes."""
    cfg = api_client.configuration
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, header or None)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


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
