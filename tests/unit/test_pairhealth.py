"""The start-up certificate check without cryptography (gateway.provisioning.pairhealth): the
same verdicts as the cryptography-based tools for every kind of pair and every broken input."""

from __future__ import annotations

import datetime as dt
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519

from gateway.provisioning import certs, pairhealth

CA_CERT_PEM, CA_KEY_PEM = certs.create_ca("pairhealth CA")
CA_CERT = certs.load_certificate(CA_CERT_PEM, "ca")
CA_KEY = certs.load_private_key(CA_KEY_PEM, "ca key")


def issued(public: Any, *, not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(certs.subject("pi"))
        .issuer_name(CA_CERT.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(CA_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Any, fmt: Any = serialization.PrivateFormat.PKCS8, password: bytes = b"") -> bytes:
    encryption: Any = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)  # type: ignore[no-any-return]


NOW = dt.datetime.now(dt.UTC)
YEAR = dt.timedelta(days=365)


def pair_for(key: Any, fmt: Any = serialization.PrivateFormat.PKCS8) -> tuple[bytes, bytes]:
    return issued(key.public_key(), not_before=NOW - YEAR, not_after=NOW + YEAR), key_pem(key, fmt)


def check(cert: bytes, key: bytes, now: float | None = None) -> pairhealth.CertificateHealth:
    return pairhealth.check_pair(
        cert_data=cert,
        key_data=key,
        cert_source="/etc/gw/cert.pem",
        key_source="/etc/gw/key.pem",
        key_mode=stat.S_IFREG | 0o600,
        dedicated_group=False,
        now=time.time() if now is None else now,
        warn_before_days=30,
    )


@pytest.mark.parametrize(
    ("make_key", "fmt"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
        (
            lambda: ec.generate_private_key(ec.SECP384R1()),
            serialization.PrivateFormat.TraditionalOpenSSL,
        ),
        (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            serialization.PrivateFormat.TraditionalOpenSSL,
        ),
        (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            serialization.PrivateFormat.PKCS8,
        ),
        (ed25519.Ed25519PrivateKey.generate, serialization.PrivateFormat.PKCS8),
        (ed448.Ed448PrivateKey.generate, serialization.PrivateFormat.PKCS8),
    ],
    ids=["ec-pkcs8", "ec-traditional", "rsa-traditional", "rsa-pkcs8", "ed25519", "ed448"],
)
def test_every_supported_key_kind_passes_with_its_certificate(make_key: Any, fmt: Any) -> None:
    cert, key = pair_for(make_key(), fmt)
    health = check(cert, key)
    assert 364 < health.days_left < 366 and 729 < health.lifetime_days < 731


def test_the_expiry_is_the_one_cryptography_reads() -> None:
    cert, key = pair_for(ec.generate_private_key(ec.SECP256R1()))
    expected = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    assert check(cert, key).expires_at == expected


def test_a_der_certificate_is_accepted_like_pem() -> None:
    cert, key = pair_for(ec.generate_private_key(ec.SECP256R1()))
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    assert check(der, key).expires_at == check(cert, key).expires_at


def test_a_key_of_another_kind_does_not_belong() -> None:
    cert, _ = pair_for(ec.generate_private_key(ec.SECP256R1()))
    other = key_pem(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(pairhealth.CertificateError, match=r"key\.pem does not belong to"):
        check(cert, other)


def test_generalized_times_after_2049_are_read() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    until = dt.datetime(2060, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    cert = issued(key.public_key(), not_before=NOW - YEAR, not_after=until)
    assert check(cert, key_pem(key)).expires_at == until.timestamp()


def test_the_not_yet_valid_message_names_the_start() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2040, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    cert = issued(key.public_key(), not_before=start, not_after=start + YEAR)
    with pytest.raises(pairhealth.CertificateError, match=r"from 2040-05-06T07:08:09\+00:00"):
        check(cert, key_pem(key))


@pytest.mark.parametrize(
    "cert",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK==\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
    ids=["empty", "garbage", "bad-base64", "truncated-der", "no-certificate-block"],
)
def test_garbage_certificates_are_errors(cert: bytes) -> None:
    key = key_pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(pairhealth.CertificateError, match=r"cert\.pem: not a valid X\.509"):
        check(cert, key)


def test_a_certificate_with_a_corrupted_body_is_an_error() -> None:
    cert, key = pair_for(ec.generate_private_key(ec.SECP256R1()))
    der = bytearray(x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER))
    der[-40] ^= 0xFF  # inside the signature: the walk passes, but the structure must hold
    der[4] = 0x31  # the tbsCertificate's tag is no longer a SEQUENCE
    with pytest.raises(pairhealth.CertificateError, match=r"not a valid X\.509"):
        check(bytes(der), key)


def test_an_encrypted_key_is_refused_without_prompting() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, _ = pair_for(key)
    encrypted = key_pem(key, password=b"secret")
    with pytest.raises(pairhealth.CertificateError, match=r"not an unencrypted PEM private key"):
        check(cert, encrypted)


@pytest.mark.parametrize(
    "make_key",
    [lambda: dsa.generate_private_key(key_size=2048), x25519.X25519PrivateKey.generate],
    ids=["dsa", "x25519"],
)
def test_unsupported_key_kinds_are_refused(make_key: Any) -> None:
    cert, _ = pair_for(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(pairhealth.CertificateError, match="unsupported private key type"):
        check(cert, key_pem(make_key()))


def test_a_corrupted_key_is_an_error_that_never_quotes_it() -> None:
    cert, key = pair_for(ec.generate_private_key(ec.SECP256R1()))
    lines = key.splitlines()
    broken = b"\n".join([lines[0], lines[1][:24], *lines[2:]])  # the DER cut short
    with pytest.raises(pairhealth.CertificateError) as caught:
        check(cert, broken)
    assert "key.pem" in str(caught.value)
    assert lines[1].decode()[:16] not in str(caught.value)


def test_certificate_expiry_reads_a_file_and_is_none_for_garbage(tmp_path: Path) -> None:
    cert, _ = pair_for(ec.generate_private_key(ec.SECP256R1()))
    good, bad = tmp_path / "cert.pem", tmp_path / "bad.pem"
    good.write_bytes(cert)
    bad.write_bytes(b"garbage")
    expected = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    assert pairhealth.certificate_expiry(good) == expected
    assert pairhealth.certificate_expiry(bad) is None


def test_a_refused_memory_file_is_a_certificate_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def refuse(*_: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    cert, key = pair_for(ec.generate_private_key(ec.SECP256R1()))
    monkeypatch.setattr(os, "memfd_create", refuse)
    with pytest.raises(pairhealth.CertificateError, match=r"key\.pem: cannot be checked"):
        check(cert, key)
