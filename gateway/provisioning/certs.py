"""Pure X.509 logic with ``cryptography``: keys, CSRs, inspection, health rules and CA tools.

Nothing here touches files or the network: callers pass bytes (and file facts such as the key's
mode) in and get bytes or verdicts out. Private keys are EC P-256, generated where they are
used; no function here logs, and no error message ever contains key material.
"""

from __future__ import annotations

import datetime as dt
import io
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The start-up health rules need no cryptography; they live in pairhealth (the daemon's path)
# and are re-exported here for the certificate tools.
from gateway.provisioning.pairhealth import (
    DAY_S,
    CertificateError,
    CertificateHealth,
    check_pair,
    key_permission_problem,
    renewal_due_at,
)

__all__ = [
    "ISSUING_CA_FILE",
    "CertificateError",
    "CertificateHealth",
    "CertificateInfo",
    "PrivateKey",
    "ThingCredentials",
    "build_csr",
    "certificate_pem",
    "check_pair",
    "create_ca",
    "describe",
    "fingerprint",
    "generate_key",
    "issue_certificate",
    "key_matches",
    "key_permission_problem",
    "key_type",
    "load_certificate",
    "load_csr",
    "load_private_key",
    "private_key_pem",
    "renewal_due_at",
    "thing_batch",
    "thing_batch_zip",
    "verification_certificate",
]

# Issued certificates start a little in the past so small clock skews never make them invalid.
_BACKDATE = dt.timedelta(minutes=5)

PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


# -- keys and CSRs ---------------------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key (AWS IoT and every device cloud accept it)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def build_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PEM certificate signing request for ``key`` (the cloud decides the final subject)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject(common_name))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certificate(data: bytes, source: str) -> x509.Certificate:
    """The first certificate of a PEM (or DER) blob; ``source`` names it in errors."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{source}: not a valid X.509 certificate ({exc})") from exc


def load_private_key(data: bytes, source: str) -> PrivateKey:
    """An unencrypted PEM private key; errors name ``source`` and never include its bytes."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message never quotes the key; keep only its class to be sure.
        raise CertificateError(
            f"{source}: not an unencrypted PEM private key ({type(exc).__name__})"
        ) from exc
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertificateError(f"{source}: unsupported private key type {type(key).__name__}")
    return key


def load_csr(data: bytes, source: str = "CSR") -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CertificateError(f"{source}: not a valid PEM CSR ({exc})") from exc
    if not csr.is_signature_valid:
        raise CertificateError(f"{source}: the CSR's signature is invalid")
    return csr


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of the certificate's public key."""
    return cert.public_key() == key.public_key()


# -- inspection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    common_name: str | None
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str
    fingerprint_sha256: str  # also AWS IoT's certificate id
    is_ca: bool
    self_signed: bool

    def lines(self, now: dt.datetime) -> list[str]:
        left = (self.not_after - now).total_seconds() / DAY_S
        state = "expired" if left < 0 else ("not yet valid" if now < self.not_before else "valid")
        return [
            f"subject:     {self.subject}",
            f"issuer:      {self.issuer}{' (self-signed)' if self.self_signed else ''}",
            f"serial:      {self.serial}",
            f"valid from:  {self.not_before.isoformat()}",
            f"valid until: {self.not_after.isoformat()} ({state}, {left:.1f} days left)",
            f"key type:    {self.key_type}",
            f"CA:          {'yes' if self.is_ca else 'no'}",
            f"SHA-256:     {self.fingerprint_sha256}",
        ]


def key_type(public: object) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {public.curve.name}"
    if isinstance(public, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(public, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(public).__name__


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def describe(cert: x509.Certificate) -> CertificateInfo:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = names[0].value if names else None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=common if isinstance(common, str) or common is None else common.decode(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=key_type(cert.public_key()),
        fingerprint_sha256=fingerprint(cert),
        is_ca=is_ca,
        self_signed=cert.issuer == cert.subject and _signed_by(cert, cert),
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    public = issuer.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            hash_algorithm = cert.signature_hash_algorithm
            if hash_algorithm is None:
                return False
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
        elif isinstance(public, rsa.RSAPublicKey):
            hash_algorithm = cert.signature_hash_algorithm
            if hash_algorithm is None:
                return False
            public.verify(
                cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hash_algorithm
            )
        elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


# -- CA tools (for users running their own CA) -----------------------------------------------


def subject(common_name: str) -> x509.Name:
    """A subject (or issuer) name holding just the common name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(common_name: str, *, days: float = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA (EC P-256): (certificate PEM, private key PEM)."""
    key = generate_key()
    public = key.public_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject(common_name))
        .issuer_name(subject(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate_pem(cert), private_key_pem(key)


def _ca_signing_key(ca_cert: x509.Certificate, ca_key: PrivateKey) -> PrivateKey:
    if not key_matches(ca_cert, ca_key):
        raise CertificateError("the CA key does not belong to the CA certificate")
    return ca_key


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    common_name: str,
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    *,
    days: float = 365,
) -> x509.Certificate:
    """A client certificate for ``common_name`` signed by the CA."""
    signer = _ca_signing_key(ca_cert, ca_key)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    except x509.ExtensionNotFound:
        pass
    algorithm = (
        None
        if isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else (hashes.SHA256())
    )
    return builder.sign(signer, algorithm)


def verification_certificate(
    ca_cert: x509.Certificate, ca_key: PrivateKey, registration_code: str, *, days: float = 30
) -> tuple[bytes, bytes]:
    """A certificate whose CN is the cloud's registration code, signed by the CA key: uploading
    it proves possession of the CA's private key. Returns (certificate PEM, its key PEM)."""
    code = registration_code.strip()
    if not code:
        raise CertificateError("the registration code is empty")
    key = generate_key()
    cert = issue_certificate(ca_cert, ca_key, code, key.public_key(), days=days)
    return certificate_pem(cert), private_key_pem(key)


@dataclass(frozen=True)
class ThingCredentials:
    name: str
    cert_pem: bytes
    key_pem: bytes


def thing_batch(
    ca_cert: x509.Certificate, ca_key: PrivateKey, names: Sequence[str], *, days: float = 365
) -> list[ThingCredentials]:
    batch = []
    for name in names:
        key = generate_key()
        cert = issue_certificate(ca_cert, ca_key, name, key.public_key(), days=days)
        batch.append(ThingCredentials(name, certificate_pem(cert), private_key_pem(key)))
    return batch


# The issuing CA's copy in a thing's folder. Not "ca.pem": in Managed IoT Cloud's layout (the
# Thing API guide) ca.pem is the broker's CA, which a device verifies the broker with; the CA
# that issued the thing's certificate is a different one (unless the broker's is the same).
ISSUING_CA_FILE = "issuing-ca.pem"


def thing_batch_zip(ca_cert: x509.Certificate, batch: Sequence[ThingCredentials]) -> bytes:
    """A zip with one folder per thing (``cert.pem``, ``privkey.pem`` 0600, and the issuing
    CA as ``issuing-ca.pem``), laid out like a Thing Batch download."""
    buffer = io.BytesIO()
    ca_pem = certificate_pem(ca_cert)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for thing in batch:
            for name, data, mode in (
                ("cert.pem", thing.cert_pem, 0o644),
                ("privkey.pem", thing.key_pem, 0o600),
                (ISSUING_CA_FILE, ca_pem, 0o644),
            ):
                info = zipfile.ZipInfo(f"{thing.name}/{name}", date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    return buffer.getvalue()
