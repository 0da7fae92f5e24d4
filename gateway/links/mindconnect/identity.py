"""The agent's MQTT client id: ``<tenant>_<CN of the agent certificate's subject>``.

Siemens' "Onboarding MindConnect MQTT Agent" how-to: "<clientId> = <tenant>_<AgentCertificate.
Subject.CommonName>". The CN is read with a small DER walk of the PEM certificate (standard
library only: the daemon does not load ``cryptography`` for one string). Only the path to the
subject is walked (tbsCertificate: optional version, serial, signature algorithm, issuer,
validity, subject); a certificate that does not have that shape is refused as unreadable.
Blocking (reads the file): call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from gateway.core.credfiles import CredentialFileError, read_credential_file
from gateway.errors import TlsSetupError

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_CN_OID = bytes.fromhex("550403")  # 2.5.4.3 commonName
_SEQUENCE, _SET, _OID, _CONTEXT_0 = 0x30, 0x31, 0x06, 0xA0
# DirectoryString choices (X.520): UTF8, Printable, Teletex, IA5, Universal, BMP.
_TEXT = {0x0C: "utf-8", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii"}
_WIDE = {0x1C: "utf-32-be", 0x1E: "utf-16-be"}


class _DerError(ValueError):
    pass


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the element at ``at``."""
    if at + 2 > len(data):
        raise _DerError("truncated")
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    if at + length > len(data):
        raise _DerError("truncated")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items = []
    while start < end:
        tag, value_start, value_end = _tlv(data, start)
        if value_end > end:
            raise _DerError("element runs past its parent")
        items.append((tag, value_start, value_end))
        start = value_end
    return items


def subject_common_name(der: bytes) -> str | None:
    """The subject's CN of a DER certificate (the first one if several), or None if it has
    none; ``ValueError`` if the bytes are not a certificate of the expected shape."""
    tag, start, end = _tlv(der, 0)
    if tag != _SEQUENCE:
        raise _DerError("not a SEQUENCE")
    tag, start, end = _tlv(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise _DerError("no tbsCertificate")
    fields = _children(der, start, end)
    if fields and fields[0][0] == _CONTEXT_0:
        fields = fields[1:]  # [0] version
    if len(fields) < 5:
        raise _DerError("too few fields")
    _tag, start, end = fields[4]  # serial, signature, issuer, validity, subject
    for rdn_tag, rdn_start, rdn_end in _children(der, start, end):
        if rdn_tag != _SET:
            raise _DerError("subject is not a Name")
        for atv_tag, atv_start, atv_end in _children(der, rdn_start, rdn_end):
            if atv_tag != _SEQUENCE:
                raise _DerError("bad attribute")
            parts = _children(der, atv_start, atv_end)
            if len(parts) != 2 or parts[0][0] != _OID:
                raise _DerError("bad attribute")
            if der[parts[0][1] : parts[0][2]] != _CN_OID:
                continue
            value_tag, value_start, value_end = parts[1]
            raw = der[value_start:value_end]
            encoding = _TEXT.get(value_tag) or _WIDE.get(value_tag)
            if encoding is None:
                raise _DerError("CN of an unknown string type")
            return raw.decode(encoding)
    return None


def read_common_name(cert: Path) -> str:
    """The CN of the first certificate in the PEM file ``cert``; ``TlsSetupError`` naming the
    file if it cannot be read or has no CN."""
    try:
        data = read_credential_file(cert, "agent certificate")
    except CredentialFileError as exc:
        raise TlsSetupError(str(exc)) from exc
    match = _PEM.search(data)
    if match is None:
        raise TlsSetupError(f"agent certificate {cert} holds no PEM certificate")
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        name = subject_common_name(der)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise TlsSetupError(f"agent certificate {cert} cannot be read: {exc}") from exc
    if not name:
        raise TlsSetupError(
            f"agent certificate {cert} has no subject CN: MindConnect's client id is <tenant>_<CN>"
        )
    return name


def client_id(tenant: str, common_name: str) -> str:
    return f"{tenant}_{common_name}"
