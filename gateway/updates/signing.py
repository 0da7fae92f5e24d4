"""Release signing: Ed25519 or ECDSA P-256 signatures over manifests, and wheel bundles.

A release is an artifact plus a signed **manifest** (``checkin.Manifest``: product, version,
size and SHA-256 of the artifact, optionally ``min_version`` and ``downgrade``). The signature
is over the manifest's exact bytes: Ed25519 signs them, ECDSA signs their SHA-256 (what
``openssl dgst -sha256 -sign`` produces). ``.sig`` files hold a signature in base64 (one line;
raw bytes are accepted too).

The older scheme, a signature over the artifact's 32-byte SHA-256 digest alone (``sign_file``,
``ARTIFACT.sig``), binds no version: the gateway no longer accepts it; it is still written for
gateways from before manifests.

A **bundle** is what mode ``wheel`` installs: an uncompressed tar of ``requirements.txt`` (one
``name==version --hash=sha256:HEX`` line per wheel) and ``wheels/*.whl`` (the gateway's wheel
and every dependency), installed with ``pip --no-index --require-hashes``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import UpdateError
from gateway.updates.checkin import Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

# cryptography (about 10 MB resident) is imported inside the functions that sign or verify, so
# the daemon loads it only when an update's signature is actually checked.

MAX_SIGNATURE_BYTES = 4096
REQUIREMENTS = "requirements.txt"
WHEELS_DIR = "wheels"
MAX_BUNDLE_MEMBERS = 512
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")
_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*( --hash=sha256:[0-9a-f]{64})+$"
)


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
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

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
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

    key = load_public_key(public_key_pem)
    digest = bytes.fromhex(digest_hex)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        else:
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise UpdateError("the artifact's signature does not verify with ota.public_key") from exc


def verify_manifest(public_key_pem: bytes, manifest: bytes, signature: bytes) -> None:
    """Raise UpdateError unless ``signature`` signs the manifest bytes ``manifest``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key = load_public_key(public_key_pem)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, manifest)
        else:
            key.verify(signature, manifest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise UpdateError("the manifest's signature does not verify with ota.public_key") from exc


def _private_key(
    private_key_pem: bytes,
) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UpdateError(f"not an unencrypted PEM private key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise UpdateError("the signing key must be Ed25519 or ECDSA P-256")


def sign_file(private_key_pem: bytes, artifact: Path) -> bytes:
    """The base64 digest-only signature (with a newline) of ``artifact`` for ``verify_digest``:
    the older scheme, for gateways from before manifests (blocking)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

    key = _private_key(private_key_pem)
    digest = bytes.fromhex(sha256_file(artifact))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(digest)
    else:
        signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return base64.b64encode(signature) + b"\n"


def sign_manifest(private_key_pem: bytes, manifest: bytes) -> bytes:
    """The base64 signature (with a newline) of the manifest bytes ``manifest``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key = _private_key(private_key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(manifest)
    else:
        signature = key.sign(manifest, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature) + b"\n"


@dataclass(frozen=True)
class SignedRelease:
    """What ``edge-gateway ota sign`` wrote: the artifact, its manifest and signature files."""

    artifact: Path
    manifest: Path
    signature: Path
    content: Manifest


def sign_release(
    private_key_pem: bytes,
    artifact: Path,
    *,
    product: str,
    version: str,
    min_version: str | None = None,
    downgrade: bool = False,
) -> SignedRelease:
    """Write ``ARTIFACT.manifest`` and ``ARTIFACT.manifest.sig`` next to ``artifact`` (blocking)."""
    manifest = Manifest(
        product=product,
        version=version,
        sha256=sha256_file(artifact),
        size=artifact.stat().st_size,
        min_version=min_version,
        downgrade=downgrade,
    )
    data = manifest.dumps()
    manifest_path = artifact.with_name(artifact.name + ".manifest")
    signature_path = artifact.with_name(artifact.name + ".manifest.sig")
    manifest_path.write_bytes(data)
    signature_path.write_bytes(sign_manifest(private_key_pem, data))
    return SignedRelease(artifact, manifest_path, signature_path, manifest)


# -- wheel bundles ------------------------------------------------------------------------------


def wheel_project(name: str) -> tuple[str, str]:
    """(project, version) from a wheel's file name (``edge_gateway-1.0-py3-none-any.whl``)."""
    parts = name.removesuffix(".whl").split("-")
    if not name.endswith(".whl") or len(parts) not in (5, 6):
        raise UpdateError(f"{name!r} is not a wheel file name")
    return parts[0], parts[1]


def build_bundle(wheel: Path, deps: Path | None, output: Path) -> Path:
    """The bundle of ``wheel`` and every ``*.whl`` in ``deps``, hash-pinned (blocking).

    Deterministic (sorted members, zero times and owners), so signing it twice signs the same
    bytes. Two versions of one project are refused: pip could not install both."""
    wheels = {wheel.name: wheel}
    for path in sorted(deps.glob("*.whl")) if deps is not None else ():
        wheels.setdefault(path.name, path)
    projects: dict[str, str] = {}
    lines = []
    for name, path in sorted(wheels.items()):
        if not _WHEEL_NAME.match(name):
            raise UpdateError(f"{name!r}: unexpected characters in a wheel file name")
        project, version = wheel_project(name)
        key = re.sub(r"[-_.]+", "-", project).lower()
        if projects.setdefault(key, version) != version:
            raise UpdateError(f"two versions of {project} ({projects[key]}, {version})")
        lines.append(f"{project}=={version} --hash=sha256:{sha256_file(path)}")
    requirements = ("\n".join(lines) + "\n").encode()
    with tarfile.open(output, "w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, REQUIREMENTS, requirements)
        for name, path in sorted(wheels.items()):
            _add(archive, f"{WHEELS_DIR}/{name}", path.read_bytes())
    return output


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def bundle_name(wheel: Path) -> str:
    project, version = wheel_project(wheel.name)
    return f"{project}-{version}.bundle.tar"


def extract_bundle(bundle: Path, dest: Path) -> Path:
    """Unpack a bundle into ``dest`` after checking every member; returns requirements.txt.

    Only regular files named ``requirements.txt`` or ``wheels/<wheel>.whl`` are accepted (no
    links, folders elsewhere, ``..`` or absolute names), and every requirement line must be a
    hash-pinned ``name==version``, so nothing in it can point pip anywhere else (blocking)."""
    try:
        with tarfile.open(bundle, "r:") as archive:
            members = archive.getmembers()
            if len(members) > MAX_BUNDLE_MEMBERS:
                raise UpdateError(f"the bundle has more than {MAX_BUNDLE_MEMBERS} members")
            dest.mkdir(parents=True, exist_ok=True)
            (dest / WHEELS_DIR).mkdir(exist_ok=True)
            seen = set()
            for member in members:
                name = member.name
                folder, _, file = name.rpartition("/")
                allowed = name == REQUIREMENTS or (
                    folder == WHEELS_DIR and _WHEEL_NAME.match(file) is not None
                )
                if not member.isfile() or not allowed or name in seen:
                    raise UpdateError(f"unexpected bundle member {name[:80]!r}")
                seen.add(name)
                source = archive.extractfile(member)
                assert source is not None  # a regular file
                (dest / name).write_bytes(source.read())
    except (tarfile.TarError, OSError) as exc:
        raise UpdateError(f"not a readable bundle: {exc}") from exc
    if REQUIREMENTS not in seen:
        raise UpdateError(f"the bundle has no {REQUIREMENTS}")
    requirements = dest / REQUIREMENTS
    text = requirements.read_text(errors="replace")
    for line in text.splitlines():
        if line.strip() and not _REQUIREMENT.match(line.strip()):
            raise UpdateError(f"{REQUIREMENTS}: not a hash-pinned requirement: {line[:80]!r}")
    return requirements


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair: the private key written 0600 (never overwritten), the public PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

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
