"""Artifact signatures: Ed25519 or ECDSA P-256 over the artifact's SHA-256 digest.

The signed message is the 32-byte SHA-256 digest of the artifact (so a large artifact is never
held in memory): ECDSA signs it as a prehashed SHA-256 (exactly what ``openssl dgst -sha256
-sign`` produces), Ed25519 signs the 32 digest bytes. A ``.sig`` file holds the signature in
base64 (one line; raw bytes are accepted too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from gateway.errors import UpdateError

MAX_SIGNATURE_BYTES = 4096


def sha256_file(path: Path) -> str:
    """The file's SHA-256 as lower-case hex (blocking)."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def decode_signature(data: bytes) -> bytes:
    """A signature from a ``.sig`` file or a ``signature`` field: base64 text, else raw bytes."""
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return data


def load_public_key(pem: bytes) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UpdateError(f"ota.public_key is not a PEM public key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise UpdateError("ota.public_key must be an Ed25519 or ECDSA P-256 public key")


def verify_digest(public_key_pem: bytes, digest_hex: str, signature: bytes) -> None:
    """Raise UpdateError unless ``signature`` signs the SHA-256 digest ``digest_hex``."""
    key = load_public_key(public_key_pem)
    digest = bytes.fromhex(digest_hex)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        else:
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise UpdateError("the artifact's signature does not verify with ota.public_key") from exc


def sign_file(private_key_pem: bytes, artifact: Path) -> bytes:
    """The base64 signature (with a newline) of ``artifact`` for ``verify_digest`` (blocking)."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UpdateError(f"not an unencrypted PEM private key: {exc}") from exc
    digest = bytes.fromhex(sha256_file(artifact))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(digest)
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    else:
        raise UpdateError("the signing key must be Ed25519 or ECDSA P-256")
    return base64.b64encode(signature) + b"\n"


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair: the private key written 0600 (never overwritten), the public PEM."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UpdateError(f"{private_path} exists; not overwriting a key") from exc
    with os.fdopen(fd, "wb") as file:
        file.write(private)
    public_path.write_bytes(public)
