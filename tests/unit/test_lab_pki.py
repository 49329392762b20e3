"""The bed's certificates: a CA per run, leaves that Kubernetes reads as user and groups, and
kubeconfigs that point at them."""

from __future__ import annotations

import ssl
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lbctl.lab.pki import Pki, write_kubeconfig


def test_a_client_certificate_names_the_user_and_its_groups(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pair = pki.issue("node-1", "system:node:node-1", groups=["system:nodes"])
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:node-1"
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes"
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (pair.key.stat().st_mode & 0o777) == 0o600


def test_a_serving_certificate_verifies_against_the_ca_for_each_san(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pair = pki.issue("api", "kube-apiserver", server=True, client=False,
                     hosts=["127.0.0.1", "kubernetes.default"])  # fmt: skip
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["kubernetes.default"]
    ctx = ssl.create_default_context(cafile=str(pki.ca))  # loads: the CA is well formed
    ctx.load_cert_chain(str(pair.cert), str(pair.key))  # the key matches the certificate


def test_each_run_gets_its_own_ca(tmp_path: Path) -> None:
    one, two = Pki(tmp_path / "a"), Pki(tmp_path / "b")
    assert one.ca.read_bytes() != two.ca.read_bytes()


def test_a_kubeconfig_carries_either_a_certificate_or_a_token(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pair = pki.issue("admin", "admin", groups=["system:masters"])
    cert_cfg = yaml.safe_load(write_kubeconfig(
        tmp_path / "a", server="https://127.0.0.1:1", ca=pki.ca, client=pair
    ).read_text())  # fmt: skip
    token_path = write_kubeconfig(tmp_path / "t", server="https://127.0.0.1:1", token="s3cret")
    token_cfg = yaml.safe_load(token_path.read_text())
    assert cert_cfg["users"][0]["user"] == {
        "client-certificate": str(pair.cert),
        "client-key": str(pair.key),
    }
    assert cert_cfg["clusters"][0]["cluster"]["certificate-authority"] == str(pki.ca)
    assert token_cfg["users"][0]["user"] == {"token": "s3cret"}
    assert (token_path.stat().st_mode & 0o777) == 0o600
