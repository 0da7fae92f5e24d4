"""A throwaway certificate authority for the dev cloud (EC P-256, SHA-256).

Key material is written with mode 0600 from the moment the file exists and is never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core import tls
from gateway.core.atomicfile import write_atomic
from gateway.errors import GatewayError, TlsSetupError
from gateway.provisioning import certs

__all__ = [
    "Credentials",
    "DevCA",
    "DevCloudError",
    "certificate_common_name",
    "client_ssl_context",
]

_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"
_CERT = "cert.pem"
_KEY = "privkey.pem"
# Certificates start a day in the past so small clock skews never make them "not yet valid".
_BACKDATE = dt.timedelta(days=1)
_CA_DAYS = 3650


class DevCloudError(GatewayError):
    """The local dev cloud (CA, broker, shadow service) failed."""


@dataclass(frozen=True)
class Credentials:
    """Paths of a CA bundle, a certificate and its private key."""

    ca: Path
    cert: Path
    key: Path


def client_ssl_context(credentials: Credentials) -> ssl.SSLContext:
    """The dev cloud's mutual-TLS client context (``gateway.core.tls``; blocking: reads files)."""
    try:
        return tls.client_context(credentials.ca, credentials.cert, credentials.key)
    except TlsSetupError as exc:
        raise DevCloudError(f"cannot load TLS credentials {credentials.cert}: {exc}") from exc


def certificate_common_name(cert_path: Path) -> str:
    """The subject CN of a PEM certificate (blocking: reads the file)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DevCloudError(f"cannot read certificate {cert_path}: {exc}") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise DevCloudError(f"certificate {cert_path} has no common name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def read_json_object(path: Path, error: type[DevCloudError] = DevCloudError) -> dict[str, Any]:
    """The JSON object in ``path`` ({} if there is no file yet); ``error`` if it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data


class DevCA:
    """A self-signed CA kept in one directory (``ca.pem``, ``ca.key``)."""

    def __init__(
        self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        """Use `load_or_create`; this wraps an already loaded certificate and key."""
        self._directory = directory
        self._cert = cert
        self._key = key

    @classmethod
    def load_or_create(cls, directory: Path, common_name: str = "edge-gateway dev CA") -> DevCA:
        """Load the CA in ``directory``, creating it (and the directory) if missing.

        ``common_name`` names a new CA (a second CA, e.g. a MindConnect tenant's, needs its own
        name: TLS peers pick a client certificate's issuer by name)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / _CA_CERT, directory / _CA_KEY
        if cert_path.exists() and key_path.exists():
            return cls._load(directory, cert_path, key_path)
        key = certs.generate_key()
        now = dt.datetime.now(dt.UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(certs.subject(common_name))
            .issuer_name(certs.subject(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                certs.key_usage(ca=True),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        # Key first: a reader that sees ca.pem can then always find its key.
        write_atomic(key_path, certs.private_key_pem(key), 0o600)
        write_atomic(cert_path, certs.certificate_pem(cert), 0o644)
        return cls(directory, cert, key)

    @classmethod
    def _load(cls, directory: Path, cert_path: Path, key_path: Path) -> DevCA:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise DevCloudError(f"cannot load dev CA from {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise DevCloudError(f"{key_path} does not hold the key of {cert_path}")
        return cls(directory, cert, key)

    @property
    def cert_path(self) -> Path:
        """Path of the CA certificate (PEM)."""
        return self._directory / _CA_CERT

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate."""
        return self._cert

    def issue(
        self,
        common_name: str,
        directory: Path,
        *,
        server: bool = False,
        days: float = 365,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> Credentials:
        """Issue a client (or ``server``) certificate into ``directory``.

        Writes ``cert.pem``, ``privkey.pem`` (0600) and a copy of the CA as ``ca.pem``: the CA
        the dev cloud's broker (and HTTPS server) certificates chain to, which is what ``ca.pem``
        means in Managed IoT Cloud's layout.
        """
        if server:
            dns_names = ["localhost", *dns_names]
            ip_addresses = ["127.0.0.1", *ip_addresses]
        key = certs.generate_key()
        cert = self._build(
            common_name,
            key.public_key(),
            days=days,
            server=server,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        directory.mkdir(parents=True, exist_ok=True)
        creds = Credentials(ca=directory / _CA_CERT, cert=directory / _CERT, key=directory / _KEY)
        write_atomic(creds.key, certs.private_key_pem(key), 0o600)
        write_atomic(creds.cert, certs.certificate_pem(cert), 0o644)
        write_atomic(creds.ca, certs.certificate_pem(self._cert), 0o644)
        return creds

    def sign_csr(self, csr_pem: bytes, common_name: str, days: float = 365) -> bytes:
        """Sign a CSR as a client certificate for ``common_name`` (the CSR subject is ignored)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise DevCloudError(f"invalid CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise DevCloudError("CSR signature is invalid")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            # RSA is accepted too: some provisioning tools default to it.
            raise DevCloudError("CSR key must be EC or RSA")
        cert = self._build(common_name, public, days=days, server=False)
        return certs.certificate_pem(cert)

    def _build(
        self,
        common_name: str,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        *,
        days: float,
        server: bool,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(certs.subject(common_name))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                certs.key_usage(ca=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ip_addresses)]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self._key, hashes.SHA256())
