"""The speaker's Kubernetes API client: credentials from a kubeconfig or the Pod's ServiceAccount,
JSON requests over one urllib3 pool, and the same endpoint for kopf's watches. Used by
speaker.runner and speaker.kube; the `kubernetes` package's client and config loaders are 15 MiB
of a speaker's RSS for five requests (docs/performance.md, Speaker RSS). It is imported only
for a kubeconfig whose user runs an exec plugin or an auth provider, to load that user's token.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import kopf
import urllib3
import yaml

# In-cluster credentials (the kubelet mounts them; a projected token is rotated in place).
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A token file is read again at most once a minute, as the kubernetes client's in-cluster loader
# does: the kubelet renews a projected token at 80 % of its life (at least 10 minutes).
TOKEN_REREAD = 60.0
# Connections kept open to the API server: one per thread that can call it at once (the
# speaker.conditions' 4 CONDITION_WRITERS and a few single calls); lbctl.kubeclient has the
# controller's.
CONNECTION_POOL_SIZE = 12


class ConfigError(Exception):
    """No usable credentials: what was being read and why."""


class ApiError(Exception):
    """An API request that got an HTTP error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the API server is and how to prove who we are. `token` is called for each request
    and each kopf login (a token file is re-read when it may have been rotated)."""

    server: str
    ca_file: str | None = None
    insecure: bool = False
    token: Callable[[], str | None] = lambda: None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None


def credentials_for(kubeconfig: str | None) -> Credentials:
    """The given kubeconfig, else in-cluster credentials, else $KUBECONFIG or ~/.kube/config (the
    order of lbctl.kubeclient.api_client_for)."""
    if kubeconfig:
        return from_kubeconfig([kubeconfig])
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if host and (SERVICE_ACCOUNT / "token").exists():
        return in_cluster(host, os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
    paths = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return from_kubeconfig([p for p in paths.split(os.pathsep) if p])


def in_cluster(host: str, port: str) -> Credentials:
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(SERVICE_ACCOUNT / "ca.crt"),
        token=_token_file(str(SERVICE_ACCOUNT / "token")),
    )


def _token_file(path: str) -> Callable[[], str | None]:
    """The token in `path`, read again once TOKEN_REREAD seconds have passed."""
    lock = threading.Lock()
    cache: tuple[float, str | None] = (float("-inf"), None)

    def token() -> str | None:
        nonlocal cache
        with lock:
            if time.monotonic() - cache[0] >= TOKEN_REREAD:
                cache = (time.monotonic(), Path(path).read_text().strip())
            return cache[1]

    return token


def from_kubeconfig(paths: list[str]) -> Credentials:
    """The current context of the kubeconfig files `paths` (the first file to name a context,
    cluster or user wins, as kubectl merges them)."""
    merged: dict[str, dict[str, Any]] = {"contexts": {}, "clusters": {}, "users": {}}
    current = None
    for path in paths:
        expanded = Path(path).expanduser()
        try:
            data = yaml.safe_load(expanded.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"reading kubeconfig {expanded}: {err}") from err
        current = current or data.get("current-context")
        for kind, items in merged.items():
            for item in data.get(kind) or []:
                items.setdefault(item["name"], (item.get(kind[:-1]) or {}, expanded.parent))
    if current is None:
        raise ConfigError(f"kubeconfig {paths[0]}: no current-context")
    try:
        context, _ = merged["contexts"][current]
        cluster, cluster_dir = merged["clusters"][context["cluster"]]
        user, user_dir = merged["users"][context["user"]]
    except KeyError as err:
        raise ConfigError(f"kubeconfig {paths[0]}: no {err} for context {current!r}") from err
    if "exec" in user or "auth-provider" in user:
        return _from_kubernetes_client(paths[0])

    def file(entry: Mapping[str, Any], key: str, where: Path) -> str | None:
        """A file the kubeconfig names (relative to the kubeconfig) or holds as base64 data."""
        if entry.get(f"{key}-data"):
            return _temp_file(base64.b64decode(entry[f"{key}-data"]))
        return str(where / entry[key]) if entry.get(key) else None

    token: Callable[[], str | None] = lambda: user.get("token")  # noqa: E731
    if not user.get("token") and user.get("tokenFile"):
        token = _token_file(str(user_dir / user["tokenFile"]))
    return Credentials(
        server=str(cluster["server"]),
        ca_file=file(cluster, "certificate-authority", cluster_dir),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=token,
        cert_file=file(user, "client-certificate", user_dir),
        key_file=file(user, "client-key", user_dir),
        username=user.get("username"),
        password=user.get("password"),
    )


def _from_kubernetes_client(path: str) -> Credentials:
    """An exec plugin or auth provider: the kubernetes client loads and refreshes the token."""
    from kubernetes import client, config  # only here: 15 MiB

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    header: Callable[[], str | None] = lambda: cfg.get_api_key_with_prefix("authorization")  # noqa: E731
    return Credentials(
        server=cfg.host,
        ca_file=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        token=lambda: (header() or "").removeprefix("Bearer ").removeprefix("bearer ") or None,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
    )


def _temp_file(data: bytes) -> str:
    """A private file holding `data` for the TLS library, removed at exit."""
    fd, name = tempfile.mkstemp(prefix="lbctl-kube-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    atexit.register(os.unlink, name)
    return name


def connection_info(creds: Credentials) -> kopf.ConnectionInfo:
    """The same endpoint and credentials for kopf's watches as for our requests."""
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        insecure=creds.insecure,
        username=creds.username,
        password=creds.password,
        scheme="Bearer" if creds.token() else None,
        token=creds.token(),
        certificate_path=creds.cert_file,
        private_key_path=creds.key_file,
    )


class RestClient:
    """JSON requests to one API server, safe to call from several threads at once."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.pool = urllib3.PoolManager(
            maxsize=CONNECTION_POOL_SIZE,
            cert_reqs="CERT_NONE" if creds.insecure else "CERT_REQUIRED",
            ca_certs=creds.ca_file,
            cert_file=creds.cert_file,
            key_file=creds.key_file,
        )
        if creds.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def request(
        self,
        method: str,
        path: tuple[str, ...],
        body: object = None,
        *,
        content_type: str = "application/json",
        timeout: float | tuple[float, float],
    ) -> bytes:
        """The answer's body; ApiError on an HTTP error status, urllib3's HTTPError or OSError
        when there was no answer."""
        headers = {"Accept": "application/json", "User-Agent": "lbctl-speaker"}
        token = self.creds.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self.creds.username is not None:
            pair = f"{self.creds.username}:{self.creds.password or ''}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        answer = self.pool.request(
            method,
            self.creds.server.rstrip("/") + "/" + "/".join(quote(p, safe="") for p in path),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=connect, read=read),
        )
        if not 200 <= answer.status < 300:
            raise ApiError(answer.status, answer.reason or "")
        return answer.data

    def close(self) -> None:
        self.pool.clear()
