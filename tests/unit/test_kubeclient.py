"""lbctl.kubeclient: the API client the controller and the speaker build, from a kubeconfig on
disk (no API server: building a client opens no connection)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controller.lease import KubeLeaseStore
from controller.writers import EVENT_WORKERS, WORKERS
from lbctl.kubeclient import CONNECTION_POOL_SIZE, api_client_for

SERVER = "https://127.0.0.1:6443"
KUBECONFIG = f"""\
apiVersion: v1
kind: Config
clusters:
- name: bed
  cluster: {{server: "{SERVER}", insecure-skip-tls-verify: true}}
users:
- name: me
  user: {{token: t0ken}}
contexts:
- name: bed
  context: {{cluster: bed, user: me}}
current-context: bed
"""


@pytest.mark.parametrize("retries", [None, False], ids=["speaker", "controller"])
def test_client_keeps_a_connection_per_thread_that_calls_the_api(
    tmp_path: Path, retries: bool | None
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    with api_client_for(str(path), retries=retries) as api:
        assert api.configuration.connection_pool_maxsize == CONNECTION_POOL_SIZE
        # The urllib3 pool the client's requests to the server would take connections from.
        pool = api.rest_client.pool_manager.connection_from_url(SERVER)
        assert pool.pool.maxsize == CONNECTION_POOL_SIZE


def test_pool_size_covers_every_controller_thread_that_calls_the_api() -> None:
    store = KubeLeaseStore(None, "ns", "lease", 1.0)  # type: ignore[arg-type]  # builds no call
    pool: ThreadPoolExecutor = store._pool
    lease_threads = pool._max_workers
    pool.shutdown()
    assert WORKERS + EVENT_WORKERS + lease_threads == CONNECTION_POOL_SIZE
