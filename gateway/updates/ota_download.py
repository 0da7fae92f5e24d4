"""Getting an offered artifact onto the disk, verified: its signed manifest (when
``ota.public_key`` is set: product, version, size and SHA-256 bound, no downgrade unless
signed), the download (resumable, capped, free disk checked as it streams, ``.part`` removed on
failure) and the check of size and SHA-256. Kept downloads live in ``state_dir/ota/<sha256>/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from gateway.config import OtaConfig
from gateway.errors import UpdateError
from gateway.updates.checkin import (
    MAX_MANIFEST_BYTES,
    Manifest,
    Offer,
    OfferError,
    manifest_problem,
    newer_problem,
    parse_manifest,
)
from gateway.updates.http import HttpClient, HttpStatusError, HttpTransportError
from gateway.updates.ota_record import UpdateRecord
from gateway.updates.signing import (
    MAX_SIGNATURE_BYTES,
    decode_signature,
    sha256_file,
    verify_manifest,
)

log = structlog.get_logger()

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]")


class ArtifactRejected(UpdateError):
    """The artifact failed verification (not retried before the next regular check-in)."""


def disk_free(folder: Path) -> int:
    """Free bytes on ``folder``'s file system (blocking)."""
    return shutil.disk_usage(folder).free


def artifact_name(url: str) -> str:
    """The file name an artifact is stored under (pip needs a wheel's own name)."""
    name = _SAFE_NAME.sub("_", urlsplit(url).path.rsplit("/", 1)[-1])
    return name if name.strip("._") else "artifact"


def remove_other_artifacts(directory: Path, *, keep: str | None) -> None:
    """Delete kept downloads other than ``keep`` (a checksum folder) (blocking)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and re.fullmatch(r"[0-9a-f]{64}", entry.name) and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)


class ArtifactDownloader:
    """Verified artifacts for offers, in ``record.directory``; reports downloading/verifying."""

    def __init__(
        self,
        ota: OtaConfig,
        *,
        product_id: str,
        record: UpdateRecord,
        free_space: Callable[[Path], int] | None = None,
    ) -> None:
        self.ota = ota
        self.product_id = product_id
        self.directory = record.directory
        self._record = record
        self._free_space = free_space

    async def obtain(self, http: HttpClient, offer: Offer, *, baseline: str | None) -> Path:
        """A verified artifact for ``offer``: the one kept from before, or a new download.
        ``baseline`` is the version the offer must be newer than."""
        ota = self.ota
        folder = self.directory / offer.checksum
        final = folder / artifact_name(offer.url)
        part = folder / (final.name + ".part")
        await asyncio.to_thread(remove_other_artifacts, self.directory, keep=offer.checksum)
        manifest = await self.manifest(http, offer, baseline)  # first: unsigned means no download
        size_limit = ota.max_bytes if manifest is None else manifest.size
        if await asyncio.to_thread(final.is_file):
            if await asyncio.to_thread(_matches, final, offer.checksum, manifest):
                log.info("ota_artifact_reused", version=offer.version, path=str(final))
                return final
            await asyncio.to_thread(final.unlink)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True, mode=0o700)
        self._record.set("downloading", offer.version)
        started = time.monotonic()
        free = self._free_space or disk_free
        try:
            downloaded = await http.download(
                offer.url,
                part,
                max_bytes=size_limit,
                timeout_s=ota.download_timeout_s,
                check_space=lambda remaining: _check_space(folder, remaining, ota, free),
            )
        except HttpTransportError:
            raise  # a cut link: the part stays for a Range request while the offer stands
        except HttpStatusError as exc:
            if exc.status < 500:
                await asyncio.to_thread(part.unlink, missing_ok=True)
            raise
        except (UpdateError, OSError):
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise
        log.info(
            "ota_downloaded",
            version=offer.version,
            bytes=downloaded.size,
            seconds=round(time.monotonic() - started, 2),
        )
        self._record.set("verifying", offer.version)
        try:
            await asyncio.to_thread(_verify, part, offer, manifest)
        except UpdateError as exc:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise ArtifactRejected(f"verification failed, artifact deleted: {exc}") from exc
        await asyncio.to_thread(os.replace, part, final)
        log.info("ota_verified", version=offer.version, signed=manifest is not None)
        return final

    async def manifest(
        self, http: HttpClient, offer: Offer, baseline: str | None
    ) -> Manifest | None:
        """The offer's signed manifest, verified and checked against the offer and this device
        (with ``ota.public_key``); without a key only the version order is checked."""
        key_path = self.ota.public_key
        if key_path is None:
            if (problem := newer_problem(offer, baseline)) is not None:
                raise ArtifactRejected(problem)
            return None
        if offer.manifest is not None and offer.manifest_signature is not None:
            data = offer.manifest.encode()
            signature = decode_signature(offer.manifest_signature.encode())
        else:
            parts = urlsplit(offer.url)
            manifest_url = parts._replace(path=parts.path + ".manifest").geturl()
            signature_url = parts._replace(path=parts.path + ".manifest.sig").geturl()
            try:
                data = await http.fetch(manifest_url, max_bytes=MAX_MANIFEST_BYTES)
                signature = decode_signature(
                    await http.fetch(signature_url, max_bytes=MAX_SIGNATURE_BYTES)
                )
            except HttpStatusError as exc:
                if exc.status in (404, 410):
                    message = f"unsigned: no {parts.path}.manifest(.sig), but ota.public_key is set"
                    raise ArtifactRejected(message) from exc
                raise
        public_key = await asyncio.to_thread(key_path.read_bytes)
        try:
            verify_manifest(public_key, data, signature)
            manifest = parse_manifest(data)
        except (UpdateError, OfferError) as exc:
            raise ArtifactRejected(str(exc)) from exc
        problem = manifest_problem(
            manifest, offer, product_id=self.product_id, running_version=baseline
        )
        if problem is None and manifest.size > self.ota.max_bytes:
            limit = self.ota.max_bytes
            problem = f"the artifact is {manifest.size} bytes; ota.max_bytes is {limit}"
        if problem is not None:
            raise ArtifactRejected(problem)
        return manifest


def _verify(path: Path, offer: Offer, manifest: Manifest | None) -> None:
    """SHA-256 against the offer, size and SHA-256 against the signed manifest (blocking)."""
    actual = sha256_file(path)
    if actual != offer.checksum:
        raise UpdateError(f"SHA-256 is {actual}, the offer says {offer.checksum}")
    if manifest is not None:
        size = path.stat().st_size
        if size != manifest.size or actual != manifest.sha256:
            raise UpdateError(f"the artifact ({size} bytes) is not the one the manifest signs")


def _matches(path: Path, checksum: str, manifest: Manifest | None) -> bool:
    try:
        _verify(path, Offer("kept", "", checksum), manifest)
    except UpdateError:
        return False
    return True


def _check_space(
    folder: Path, remaining: int, ota: OtaConfig, free_space: Callable[[Path], int]
) -> None:
    """Refuse to go on when the download would leave less than ``min_free_bytes`` (blocking);
    called before the first byte and again as it streams, so a body without Content-Length
    cannot fill the disk either."""
    headroom = ota.min_free_bytes
    free = free_space(folder)
    if free < remaining + headroom:
        raise UpdateError(
            f"not enough disk space: {free} bytes free, {remaining} to download "
            f"and {headroom} to keep free"
        )
