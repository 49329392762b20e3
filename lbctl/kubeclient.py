"""The controller's Kubernetes client: one ApiClient from a kubeconfig or in-cluster credentials,
and the same endpoint for kopf's watches. (The speaker's is lbctl.restclient; kopf's settings,
shared by both, are lbctl.kopfsettings.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import kopf
from kubernetes import client, config

# Connections kept open to the API server: one per thread that can call it at once. The
# controller has 12: controller.writers' WORKERS (8) Service writers and EVENT_WORKERS (2) Event
# posters, and the 2 threads of controller.lease.KubeLeaseStore. The client's default is 5 per
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
