"""The dev cloud's throwaway CA."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.devcloud.pki import (
    Credentials,
    DevCA,
    DevCloudError,
    certificate_common_name,
    client_ssl_context,
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return DevCA.load_or_create(tmp_path_factory.mktemp("ca"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def extended_usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_new_ca_writes_cert_and_private_key_0600(tmp_path: Path) -> None:
    created = DevCA.load_or_create(tmp_path / "new")
    assert created.cert_path == tmp_path / "new" / "ca.pem"
    assert mode(tmp_path / "new" / "ca.key") == 0o600
    assert (
        load(created.cert_path).extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    )


def test_existing_ca_is_loaded_not_replaced(tmp_path: Path) -> None:
    first = DevCA.load_or_create(tmp_path)
    second = DevCA.load_or_create(tmp_path)
    assert first.certificate == second.certificate


def test_ca_with_foreign_key_is_refused(tmp_path: Path) -> None:
    DevCA.load_or_create(tmp_path / "a")
    DevCA.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(DevCloudError, match="does not hold the key"):
        DevCA.load_or_create(tmp_path / "a")


def test_client_cert_has_cn_and_client_auth(ca: DevCA, tmp_path: Path) -> None:
    creds = ca.issue("lamp-1", tmp_path)
    cert = load(creds.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lamp-1"
    assert extended_usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca.certificate)


def test_issued_files_are_written_with_private_key_0600(ca: DevCA, tmp_path: Path) -> None:
    creds = ca.issue("lamp-1", tmp_path)
    assert (creds.cert.name, creds.key.name, creds.ca.name) == ("cert.pem", "privkey.pem", "ca.pem")
    assert mode(creds.key) == 0o600
    assert creds.ca.read_bytes() == ca.cert_path.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keys_are_p256_and_signatures_sha256(ca: DevCA, tmp_path: Path) -> None:
    creds = ca.issue("lamp-1", tmp_path)
    key = serialization.load_pem_private_key(creds.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert isinstance(load(creds.cert).signature_hash_algorithm, hashes.SHA256)


def test_server_cert_has_server_auth_and_loopback_names(ca: DevCA, tmp_path: Path) -> None:
    creds = ca.issue("broker", tmp_path, server=True, dns_names=["gw.local"])
    cert = load(creds.cert)
    assert extended_usages(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.local"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_validity_follows_days(ca: DevCA, tmp_path: Path) -> None:
    cert = load(ca.issue("short", tmp_path, days=2).cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days == 3  # backdated by one day against clock skew


def test_sign_csr_uses_given_common_name_and_csr_key(ca: DevCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever")]))
        .sign(key, hashes.SHA256())
    )
    pem = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), "lamp-2")
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lamp-2"
    assert cert.public_key() == key.public_key()
    assert extended_usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_sign_csr_refuses_garbage(ca: DevCA) -> None:
    with pytest.raises(DevCloudError, match="invalid CSR"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "x")


def test_client_ssl_context_loads_issued_credentials(ca: DevCA, tmp_path: Path) -> None:
    context = client_ssl_context(ca.issue("lamp-1", tmp_path))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_client_ssl_context_reports_missing_files(tmp_path: Path) -> None:
    missing = Credentials(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(DevCloudError, match="cannot load TLS credentials"):
        client_ssl_context(missing)


def test_certificate_common_name_reads_cn(ca: DevCA, tmp_path: Path) -> None:
    assert certificate_common_name(ca.issue("lamp-9", tmp_path).cert) == "lamp-9"
