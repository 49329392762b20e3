"""lbctl.restclient and speaker.kube over it: credentials read from a kubeconfig as the kubernetes
client reads them, and the speaker's requests as the API server receives them (a local HTTP
server stands in for it)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lbctl.restclient import ConfigError, RestClient, connection_info, from_kubeconfig
from speaker.kube import Kube, KubeError

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: bed
  cluster: {{server: "{server}", certificate-authority-data: {ca}}}
users:
- name: me
  user: {user}
contexts:
- name: bed
  context: {{cluster: bed, user: me}}
current-context: bed
"""


def kubeconfig(tmp_path: Path, server: str, user: str) -> Path:
    path = tmp_path / "kubeconfig"
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    path.write_text(KUBECONFIG.format(server=server, ca=ca, user=user))
    return path


def test_token_user_reads_server_token_and_ca_data_into_a_file(tmp_path: Path) -> None:
    creds = from_kubeconfig([str(kubeconfig(tmp_path, "https://10.0.0.1:6443", "{token: t0k}"))])
    assert (creds.server, creds.token()) == ("https://10.0.0.1:6443", "t0k")
    assert creds.ca_file is not None
    assert Path(creds.ca_file).read_bytes() == b"-----BEGIN CERTIFICATE-----\n"
    info = connection_info(creds)
    assert (info.server, info.scheme, info.token) == ("https://10.0.0.1:6443", "Bearer", "t0k")


def test_token_file_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    creds = from_kubeconfig([str(kubeconfig(tmp_path, "https://h:1", "{tokenFile: token}"))])
    assert creds.token() == "from-file"


def test_client_certificate_files_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    user = "{client-certificate: c.pem, client-key: k.pem}"
    creds = from_kubeconfig([str(kubeconfig(tmp_path, "https://h:1", user))])
    assert (creds.cert_file, creds.key_file) == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))


def test_missing_context_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: gone\n")
    with pytest.raises(ConfigError, match="gone"):
        from_kubeconfig([str(path)])


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str], Any]]] = []
    status: ClassVar[int] = 200

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        Recorder.seen.append((self.command, self.path, dict(self.headers), body))
        data = json.dumps({"data": {"password": base64.b64encode(b"s3cret").decode()},
                           "metadata": {"uid": "u1"}}).encode()  # fmt: skip
        self.send_response(Recorder.status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    Recorder.seen, Recorder.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    api = RestClient(from_kubeconfig([str(kubeconfig(tmp_path, url, "{token: t0k}"))]))
    yield Kube(api, "node-1")
    api.close()
    server.shutdown()
    server.server_close()


def test_speaker_requests_reach_the_paths_the_kubernetes_client_used(kube: Kube) -> None:
    assert kube.api_reachable()
    kube.patch_condition("ns", "web", {"type": "lbctl.io/AnnouncedL2", "status": "True"})
    kube.annotate_node("lbctl.io/bgp-sessions", "{}")
    assert kube.read_secret_key("ns", "peer-pw", "password") == "s3cret"
    kube.post_event("ns", "web", type_="Warning", reason="R", message="m")
    got = [
        (method, path, headers.get("Content-Type")) for method, path, headers, _ in Recorder.seen
    ]
    strategic = "application/strategic-merge-patch+json"
    assert got == [
        ("GET", "/version", None),
        ("PATCH", "/api/v1/namespaces/ns/services/web/status", strategic),
        ("PATCH", "/api/v1/nodes/node-1", strategic),
        ("GET", "/api/v1/namespaces/ns/secrets/peer-pw", None),
        ("GET", "/api/v1/namespaces/ns/services/web", None),  # the Event's uid
        ("POST", "/api/v1/namespaces/ns/events", "application/json"),
    ]
    assert all(h["Authorization"] == "Bearer t0k" for _, _, h, _ in Recorder.seen)
    assert Recorder.seen[1][3] == {
        "status": {"conditions": [{"type": "lbctl.io/AnnouncedL2", "status": "True"}]}
    }
    assert Recorder.seen[5][3]["involvedObject"]["uid"] == "u1"


def test_an_error_status_is_a_kube_error_with_that_status(kube: Kube) -> None:
    Recorder.status = 403
    with pytest.raises(KubeError, match="HTTP 403") as err:
        kube.patch_condition("ns", "web", {"type": "lbctl.io/AnnouncedL2"})
    assert err.value.status == 403
    assert not kube.api_reachable()
