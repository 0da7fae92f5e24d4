"""The agent's MQTT client id: ``<tenant>_<CN of the agent certificate's subject>``.

Siemens' "Onboarding MindConnect MQTT Agent" how-to: "<clientId> = <tenant>_<AgentCertificate.
Subject.CommonName>". The CN is read with a small DER walk of the PEM certificate
(``gateway.core.der``, standard library only: the daemon does not load ``cryptography`` for one
string); a certificate that does not have a certificate's shape is refused as unreadable.
Blocking (reads the file): call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import binascii
from pathlib import Path

from gateway.core import der as der_reader
from gateway.core.credfiles import CredentialFileError, read_credential_file
from gateway.errors import TlsSetupError

_CN_OID = bytes.fromhex("550403")  # 2.5.4.3 commonName
# DirectoryString choices (X.520): UTF8, Printable, Teletex, IA5, Universal, BMP.
_TEXT = {0x0C: "utf-8", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii"}
_WIDE = {0x1C: "utf-32-be", 0x1E: "utf-16-be"}


def subject_common_name(der: bytes) -> str | None:
    """The subject's CN of a DER certificate (the first one if several), or None if it has
    none; ``ValueError`` if the bytes are not a certificate of the expected shape."""
    _tag, start, end = der_reader.tbs_fields(der)[der_reader.SUBJECT]
    for rdn_tag, rdn_start, rdn_end in der_reader.children(der, start, end):
        if rdn_tag != der_reader.SET:
            raise ValueError("subject is not a Name")
        for atv_tag, atv_start, atv_end in der_reader.children(der, rdn_start, rdn_end):
            if atv_tag != der_reader.SEQUENCE:
                raise ValueError("bad attribute")
            parts = der_reader.children(der, atv_start, atv_end)
            if len(parts) != 2 or parts[0][0] != der_reader.OID:
                raise ValueError("bad attribute")
            if der[parts[0][1] : parts[0][2]] != _CN_OID:
                continue
            value_tag, value_start, value_end = parts[1]
            raw = der[value_start:value_end]
            encoding = _TEXT.get(value_tag) or _WIDE.get(value_tag)
            if encoding is None:
                raise ValueError("CN of an unknown string type")
            return raw.decode(encoding)
    return None


def read_common_name(cert: Path) -> str:
    """The CN of the first certificate in the PEM file ``cert``; ``TlsSetupError`` naming the
    file if it cannot be read or has no CN."""
    try:
        data = read_credential_file(cert, "agent certificate")
    except CredentialFileError as exc:
        raise TlsSetupError(str(exc)) from exc
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsSetupError(f"agent certificate {cert} holds no PEM certificate")
    try:
        name = subject_common_name(der_reader.first_pem_certificate(data))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise TlsSetupError(f"agent certificate {cert} cannot be read: {exc}") from exc
    if not name:
        raise TlsSetupError(
            f"agent certificate {cert} has no subject CN: MindConnect's client id is <tenant>_<CN>"
        )
    return name


def client_id(tenant: str, common_name: str) -> str:
    return f"{tenant}_{common_name}"
