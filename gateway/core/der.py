"""A small DER reader: the few facts the daemon reads from certificates and keys with the
standard library alone (``cryptography`` costs about 10 MB resident), namely the validity
(the start-up health check), the subject's CN (MindConnect's client id) and a PKCS#8 key's
algorithm. Every reader raises ``ValueError`` on bytes of another shape.

RFC 5280 §4.1: Certificate → tbsCertificate → [0] version, serialNumber, signature, issuer,
validity, subject, ...
"""

from __future__ import annotations

import base64
import re

SEQUENCE, SET, INTEGER, OID, CONTEXT_0 = 0x30, 0x31, 0x02, 0x06, 0xA0
Element = tuple[int, int, int]  # (tag, content start, content end)

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
# tbsCertificate's fields after the version, with the tag each must have.
_TBS_TAGS = (INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE)
SERIAL, SIGNATURE, ISSUER, VALIDITY, SUBJECT = range(5)


def element(data: bytes, pos: int) -> Element:
    """The DER element at ``pos``: (tag, content start, content end)."""
    if pos + 2 > len(data):
        raise ValueError("truncated element")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("element runs past its container")
    return tag, pos, pos + length


def expect(data: bytes, pos: int, tag: int) -> tuple[int, int]:
    """The content (start, end) of the element at ``pos``, which must have ``tag``."""
    found, start, end = element(data, pos)
    if found != tag:
        raise ValueError(f"expected tag {tag:#x}, found {found:#x}")
    return start, end


def children(data: bytes, start: int, end: int) -> list[Element]:
    """The elements inside the content ``start``..``end``."""
    items = []
    while start < end:
        item = element(data, start)
        if item[2] > end:
            raise ValueError("element runs past its parent")
        items.append(item)
        start = item[2]
    return items


def tbs_fields(der: bytes) -> list[Element]:
    """A DER certificate's tbsCertificate fields after the version, the first five
    (serial, signature, issuer, validity, subject: index them with ``SERIAL`` ...) checked."""
    cert_start, cert_end = expect(der, 0, SEQUENCE)
    if cert_end != len(der):
        raise ValueError("trailing data after the certificate")
    tbs_start, tbs_end = expect(der, cert_start, SEQUENCE)
    fields = children(der, tbs_start, tbs_end)
    if fields and fields[0][0] == CONTEXT_0:
        fields = fields[1:]  # [0] EXPLICIT version
    if len(fields) < len(_TBS_TAGS):
        raise ValueError("too few tbsCertificate fields")
    for (tag, _, _), wanted in zip(fields, _TBS_TAGS, strict=False):
        if tag != wanted:
            raise ValueError(f"expected tag {wanted:#x}, found {tag:#x}")
    return fields


def first_pem_certificate(data: bytes) -> bytes:
    """The DER bytes of the first CERTIFICATE block of a PEM blob."""
    match = _PEM_CERT.search(data)
    if match is None:
        raise ValueError("no CERTIFICATE block")
    return base64.b64decode(b"".join(match.group(1).split()), validate=True)
