"""The start-up certificate health check with the standard library alone (no ``cryptography``).

The daemon runs this on every start and reload, so it must not load ``cryptography`` (about
10 MB resident); certificates are made and inspected with it in ``gateway.provisioning.certs``.

- The certificate is decoded by OpenSSL (``ssl``) and its validity read from the DER
  (``Certificate → tbsCertificate → validity``, RFC 5280 §4.1) by a small walk below.
- The key must be an unencrypted PEM private key of a kind the gateway supports (EC, RSA,
  Ed25519, Ed448: the label, and for PKCS#8 the algorithm identifier); OpenSSL then loads it
  beside the certificate (``SSLContext.load_cert_chain``), which rejects a key that does not
  belong to the certificate. The key never touches the disk for this: it is handed to OpenSSL
  through an anonymous in-memory file (``memfd``), and no message ever quotes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import os
import re
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.core import der as der_reader
from gateway.core.credfiles import CredentialFileError, read_credential_file
from gateway.errors import GatewayError

DAY_S = 86_400.0

_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----(.*?)-----END \1-----", re.S)
# PKCS#8 algorithm identifiers of the key kinds the gateway accepts (DER-encoded OIDs).
_KEY_ALGORITHMS = {
    bytes.fromhex("2a8648ce3d0201"): "EC",  # 1.2.840.10045.2.1 id-ecPublicKey
    bytes.fromhex("2a864886f70d010101"): "RSA",  # 1.2.840.113549.1.1.1 rsaEncryption
    bytes.fromhex("2b6570"): "Ed25519",  # 1.3.101.112
    bytes.fromhex("2b6571"): "Ed448",  # 1.3.101.113
}
# OpenSSL's reasons for a key that is not the certificate's (another key of the same kind; a key
# of another kind lands in another slot, which has no certificate).
_MISMATCH_REASONS = {"KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH", "NO_CERTIFICATE_ASSIGNED"}
_TRADITIONAL_LABELS = {"EC PRIVATE KEY", "RSA PRIVATE KEY"}
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


class CertificateError(GatewayError):
    """A certificate or key is unreadable, mismatched, expired or badly protected."""


@dataclass(frozen=True)
class CertificateHealth:
    expires_at: float  # epoch seconds
    days_left: float
    warn: bool  # within the warning window
    lifetime_days: float = 0.0  # from notBefore to notAfter


@dataclass(frozen=True)
class Validity:
    not_before: dt.datetime  # UTC
    not_after: dt.datetime  # UTC


# -- DER (gateway.core.der) -------------------------------------------------------------------


def _time(tag: int, raw: bytes) -> dt.datetime:
    """An RFC 5280 UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ)."""
    text = raw.decode("ascii")
    if tag == _UTC_TIME and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif not (tag == _GENERALIZED_TIME and len(text) == 15 and text.endswith("Z")):
        raise ValueError("validity times must be UTCTime or GeneralizedTime in UTC")
    if not text[:14].isdigit():
        raise ValueError("bad time")
    return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


def validity_of(der: bytes) -> Validity:
    """notBefore and notAfter of a DER certificate; ValueError if it is not one."""
    _, start, _ = der_reader.tbs_fields(der)[der_reader.VALIDITY]
    first, before_start, before_end = der_reader.element(der, start)
    second, after_start, after_end = der_reader.element(der, before_end)
    return Validity(
        _time(first, der[before_start:before_end]), _time(second, der[after_start:after_end])
    )


def certificate_der(data: bytes, source: str) -> bytes:
    """The first certificate of a PEM (or DER) blob, checked by OpenSSL; ``source`` names it
    in errors."""
    try:
        der = der_reader.first_pem_certificate(data) if b"-----BEGIN" in data else data
        validity_of(der)
        # OpenSSL decodes the whole certificate (a public API that parses without a file).
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
    except (ValueError, binascii.Error, ssl.SSLError) as exc:
        raise CertificateError(f"{source}: not a valid X.509 certificate ({exc})") from exc
    return der


def _key_problem(data: bytes) -> tuple[str, str] | None:
    """(exception name, reason) when ``data`` is not an unencrypted PEM private key of a
    supported kind; None when OpenSSL may load it. Never quotes the key."""
    match = _PEM_KEY.search(data)
    if match is None:
        return ("ValueError", "")
    label, body = match.group(1).decode(), match.group(2)
    if label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in body:
        return ("TypeError", "")  # what cryptography raises for an encrypted key
    if label in _TRADITIONAL_LABELS:
        return None
    if label != "PRIVATE KEY":
        return ("unsupported", label.removesuffix(" PRIVATE KEY") or label)
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        start, _ = der_reader.expect(der, 0, der_reader.SEQUENCE)  # PrivateKeyInfo
        _, pos = der_reader.expect(der, start, der_reader.INTEGER)  # version
        algorithm, _ = der_reader.expect(der, pos, der_reader.SEQUENCE)
        oid_start, oid_end = der_reader.expect(der, algorithm, der_reader.OID)
    except (ValueError, binascii.Error):
        return ("ValueError", "")
    if der[oid_start:oid_end] not in _KEY_ALGORITHMS:
        return ("unsupported", f"OID {der[oid_start:oid_end].hex()}")
    return None


@contextlib.contextmanager
def _memory_file(data: bytes, name: str) -> Iterator[str]:
    """A path OpenSSL can open that reads ``data`` from memory (never a file on disk)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _no_password() -> bytes:
    return b""  # never prompts: an encrypted key (rejected above anyway) fails to load


def check_key(cert_der: bytes, key_data: bytes, cert_source: str, key_source: str) -> None:
    """Raise ``CertificateError`` unless ``key_data`` is a supported unencrypted PEM private key
    that belongs to the certificate ``cert_der``; the sources are the files' names."""
    problem = _key_problem(key_data)
    if problem is not None:
        kind, detail = problem
        if kind == "unsupported":
            raise CertificateError(
                f"private key {key_source}: unsupported private key type {detail}"
            )
        raise CertificateError(
            f"private key {key_source}: not an unencrypted PEM private key ({kind})"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cert_pem = ssl.DER_cert_to_PEM_cert(cert_der).encode()
    try:
        with (
            _memory_file(cert_pem, "cert") as cert_path,
            _memory_file(key_data, "key") as key_path,
        ):
            context.load_cert_chain(cert_path, key_path, password=_no_password)
    except OSError as exc:
        if not isinstance(exc, ssl.SSLError):  # memfd refused (descriptors exhausted, ...)
            raise CertificateError(
                f"private key {key_source}: cannot be checked ({exc.strerror or exc})"
            ) from exc
        # SSLError: OpenSSL's reason names the failure, never the key's bytes.
        if exc.reason in _MISMATCH_REASONS:
            raise CertificateError(
                f"private key {key_source} does not belong to certificate {cert_source}"
            ) from None
        raise CertificateError(
            f"private key {key_source}: not an unencrypted PEM private key (SSLError)"
        ) from None


# -- the start-up rules ----------------------------------------------------------------------


def key_permission_problem(mode: int, *, dedicated_group: bool) -> str | None:
    """Why a key file's mode is too open, or None: 0600 (or 0640 with a dedicated group)."""
    perms = stat.S_IMODE(mode)
    if perms & 0o007:
        return f"is readable by every user (mode {perms:04o}); expected 0600: chmod 600"
    if perms & 0o070 and not (perms & 0o070 == 0o040 and dedicated_group):
        why = "" if perms & 0o070 != 0o040 else " by a group other users belong to"
        return f"is group-accessible{why} (mode {perms:04o}); expected 0600: chmod 600"
    return None


def check_pair(
    *,
    cert_data: bytes,
    key_data: bytes,
    cert_source: str,
    key_source: str,
    key_mode: int,
    dedicated_group: bool,
    now: float,
    warn_before_days: float,
) -> CertificateHealth:
    """The start-up rules: key protected, cert and key match, cert currently valid.

    Raises ``CertificateError`` naming the file at fault."""
    problem = key_permission_problem(key_mode, dedicated_group=dedicated_group)
    if problem is not None:
        raise CertificateError(f"private key {key_source} {problem}")
    der = certificate_der(cert_data, f"certificate {cert_source}")
    check_key(der, key_data, cert_source, key_source)
    validity = validity_of(der)
    not_before = validity.not_before.timestamp()
    expires_at = validity.not_after.timestamp()
    if now < not_before:
        raise CertificateError(
            f"certificate {cert_source} is not valid yet (from "
            f"{validity.not_before.isoformat()}; is the clock right?)"
        )
    if now >= expires_at:
        raise CertificateError(
            f"certificate {cert_source} expired on {validity.not_after.isoformat()}"
        )
    days_left = (expires_at - now) / DAY_S
    return CertificateHealth(
        expires_at,
        days_left,
        warn=days_left <= warn_before_days,
        lifetime_days=(expires_at - not_before) / DAY_S,
    )


def renewal_due_at(expires_at: float, renew_before_days: float) -> float:
    """When renewal should start: ``renew_before_days`` before expiry (epoch seconds)."""
    return expires_at - renew_before_days * DAY_S


def certificate_expiry(cert: Path) -> float | None:
    """When ``cert`` (PEM or DER) expires, as epoch seconds; None if it cannot be read.

    Blocking (reads the file): run it in a thread."""
    try:
        der = certificate_der(read_credential_file(cert, "certificate"), f"certificate {cert}")
    except (CredentialFileError, CertificateError) as exc:
        # structlog (and the asyncio it loads) only here: check-config runs these checks too
        import structlog

        structlog.get_logger().warning("certificate_unreadable", path=str(cert), error=str(exc))
        return None
    return validity_of(der).not_after.timestamp()
