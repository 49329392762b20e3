"""The bed's certificates, made per run: a CA, the API server's serving certificate, client
certificates for each identity, a service-account signing key; and the one kubeconfig writer.
Used by the control plane, the kubelet stand-in, tests and the lab."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=7)  # a run lasts minutes to hours; a lab left up a few days
PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Pki:
    """All key material of one run under `directory` (mode 0700)."""

    def __init__(self, directory: Path, now: dt.datetime | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self._now = now or dt.datetime.now(dt.UTC)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbctl-bed-ca")])
        self._ca_name = name
        self._ca_cert = (
            self._builder(name, self._ca_key.public_key(), issuer=name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._ca_key, hashes.SHA256())
        )  # fmt: skip
        self.ca = _write(self.dir / "ca.crt", self._ca_cert.public_bytes(PEM), 0o644)
        # The service-account token signer: RSA, the one key type every consumer accepts.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = _write(self.dir / "sa.key", _key_pem(sa_key))
        self.sa_pub = _write(
            self.dir / "sa.pub",
            sa_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            0o644,
        )

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - dt.timedelta(minutes=5))  # clock skew between children
            .not_valid_after(self._now + VALIDITY)
        )

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        groups: Sequence[str] = (),
        server: bool = False,
        client: bool = True,
        hosts: Sequence[str] = (),
    ) -> KeyPair:
        """A leaf certificate signed by the CA: CN = user, O = groups (how Kubernetes reads a
        client certificate), SANs = `hosts` (IPs or DNS names) for a serving certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            self._builder(x509.Name(attrs), key.public_key(), issuer=self._ca_name)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return KeyPair(
            cert=_write(self.dir / f"{name}.crt", cert.public_bytes(PEM), 0o644),
            key=_write(self.dir / f"{name}.key", _key_pem(key)),
        )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path | None = None,
    client: KeyPair | None = None,
    token: str | None = None,
    namespace: str = "default",
    user: str = "user",
) -> Path:
    """The one kubeconfig writer: a cluster (server, CA), a user (client certificate or bearer
    token, or nothing), a context; file mode 0600 since it holds a credential."""
    user_entry: dict[str, str] = {}
    if client is not None:
        user_entry = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    elif token is not None:
        user_entry = {"token": token}
    cluster: dict[str, str] = {"server": server}
    if ca is not None:
        cluster["certificate-authority"] = str(ca)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [
            {"name": "bed", "context": {"cluster": "bed", "user": user, "namespace": namespace}}
        ],
        "current-context": "bed",
    }
    return _write(path, yaml.safe_dump(config, sort_keys=False).encode())
