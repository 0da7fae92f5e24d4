"""Firmware from THiNX through the gateway's update path: download, verify, apply.

THiNX hands out the artifact on ``GET /device/firmware?ott=<ott>`` (or ``POST
/device/firmware``) with an ``x-MD5`` header (device.js ``update_binary``), its only integrity
check: the MD5 must match. When ``ota.public_key`` is set the artifact must also be signed the
way the Provision API's are: THiNX hosts one file, so that file is then a tar of what
``edge-gateway ota sign ARTIFACT --product P --version V`` writes (``ARTIFACT``,
``ARTIFACT.manifest``, ``ARTIFACT.manifest.sig``); the manifest must verify with the key, name
``thinx.product_id`` and the offered version, and bind the artifact's size and SHA-256. The
applier (``ota.mode``), the state (``reported.gateway.ota``) and the rollback record are the
Provision API's.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

import structlog

from gateway.errors import UpdateError
from gateway.links.thinx.ports import FirmwareRequest, ThinxHttp
from gateway.links.thinx.protocol import (
    ThinxProtocolError,
    parse_firmware_answer,
    unwrap_firmware,
)
from gateway.updates.checkin import (
    MAX_MANIFEST_BYTES,
    Offer,
    OfferError,
    decode_json,
    manifest_problem,
    newer_problem,
    parse_manifest,
    should_apply,
)
from gateway.updates.ota import Updater
from gateway.updates.signing import MAX_SIGNATURE_BYTES, decode_signature, sha256_file

log = structlog.get_logger()

THINX_DIR = "thinx"  # state_dir/ota/thinx/: the download and the unpacked signed release
PART = "firmware.part"
_CHUNK = 1024 * 1024


class FirmwareRejected(UpdateError):
    """The artifact failed verification (deleted; not retried before the next check-in)."""


def md5_file(path: Path) -> str:
    """The file's MD5 as lower-case hex (blocking): THiNX's ``x-MD5``, an integrity check only."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap_file(part: Path, max_bytes: int) -> str | None:
    """``part`` holds a JSON answer: if it wraps the artifact, write the artifact's bytes over
    it and return the MD5 the answer gives, else None (blocking: parsing is CPU work)."""
    answer = decode_json(part.read_bytes(), what="the firmware answer", max_bytes=max_bytes)
    wrapped = unwrap_firmware(answer)
    if wrapped is None:
        return None
    part.write_bytes(wrapped.data)
    return wrapped.md5


def unpack_signed(archive: Path, dest: Path, max_bytes: int) -> tuple[Path, bytes, bytes]:
    """(artifact, manifest bytes, signature) from a signed release tar (blocking). Exactly one
    artifact and its ``.manifest`` and ``.manifest.sig``, regular files at the top level."""
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()[:4]
            if len(members) != 3 or not all(m.isfile() and "/" not in m.name for m in members):
                raise FirmwareRejected(
                    "unsigned: ota.public_key is set, but the artifact is not a signed release "
                    "(a tar of ARTIFACT, ARTIFACT.manifest and ARTIFACT.manifest.sig)"
                )
            names = {m.name: m for m in members}
            artifacts = [n for n in names if not n.endswith((".manifest", ".manifest.sig"))]
            if len(artifacts) != 1:
                raise FirmwareRejected("unsigned: the signed release holds no single artifact")
            name = artifacts[0]
            manifest_member = names.get(name + ".manifest")
            signature_member = names.get(name + ".manifest.sig")
            artifact_member = names[name]
            if manifest_member is None or signature_member is None:
                raise FirmwareRejected(f"unsigned: no {name}.manifest and {name}.manifest.sig")
            if manifest_member.size > MAX_MANIFEST_BYTES:
                raise FirmwareRejected("the manifest is too large")
            if signature_member.size > MAX_SIGNATURE_BYTES:
                raise FirmwareRejected("the signature is too large")
            if artifact_member.size > max_bytes:
                raise FirmwareRejected(f"the artifact is larger than ota.max_bytes ({max_bytes})")
            manifest = _read_member(tar, manifest_member)
            signature = decode_signature(_read_member(tar, signature_member))
            dest.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = dest / _safe_name(name)
            source = tar.extractfile(artifact_member)
            assert source is not None
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, EOFError) as exc:
        raise FirmwareRejected(
            "unsigned: ota.public_key is set, but the artifact is not a signed release tar"
        ) from exc
    return target, manifest, signature


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    file = tar.extractfile(member)
    assert file is not None
    with file:
        return file.read(member.size)


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._+-" else "_" for c in name)
    return cleaned.strip("._") or "artifact"


class ThinxFirmware:
    """The firmware handler the THiNX link calls on ``FIRMWARE_UPDATE``."""

    def __init__(self, updater: Updater, *, product_id: str) -> None:
        self.updater = updater
        self.product_id = product_id

    @property
    def directory(self) -> Path:
        return self.updater.directory / THINX_DIR

    async def __call__(self, http: ThinxHttp, request: FirmwareRequest) -> bool:
        ota = self.updater.ota
        record = self.updater.record
        if ota is None or self.updater.applier is None:
            log.warning("ota_not_configured", version=request.version, source="thinx")
            return False
        # The Updater's lock: never at the same time as a Provision API update (or another).
        async with self.updater.exclusive(source="thinx", version=request.version):
            if request.version == self.updater.running_version:  # applied while we waited
                log.info("ota_offer_skipped", version=request.version, reason="already running")
                return False
            folder = self.directory
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True, mode=0o700)
            part = folder / PART
            record.set("downloading", request.version)
            try:
                downloaded = await http.download(
                    request.url,
                    part,
                    max_bytes=ota.max_bytes,
                    timeout_s=ota.download_timeout_s,
                    method=request.method,
                    json_body=request.json_body,
                    headers=request.headers,
                )
            except UpdateError as exc:
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
                record.set("failed", request.version, f"download: {exc}")
                raise
            headers: Mapping[str, str] = downloaded.headers
            if "application/json" in headers.get("content-type", ""):
                # A POST's answer: the artifact wrapped in JSON (as THiNX's server sends it),
                # or a status ("nothing to do", a refusal).
                md5 = await self._unwrap(part, request)
                if md5 is None:
                    return await self._json_answer(part, request)
                headers = {"x-md5": md5}
            log.info("ota_downloaded", version=request.version, bytes=downloaded.size)
            record.set("verifying", request.version)
            try:
                artifact, checksum = await self._verify(part, headers, request.version)
            except FirmwareRejected as exc:
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
                await record.fail(request.version, f"verification failed, artifact deleted: {exc}")
                return False
            offer = Offer(request.version, "thinx:firmware", checksum)
            skip = should_apply(
                offer,
                running_version=self.updater.running_version,
                rolled_back=self.updater.state.rolled_back,
            )
            if skip is not None:
                log.info("ota_offer_skipped", version=offer.version, reason=skip)
                record.set("idle", offer.version, None)
                return False
            try:
                await self.updater.applier.apply(offer, artifact)
            except (UpdateError, OSError) as exc:
                await record.fail(offer.version, str(exc))
                return False
            return True

    async def _unwrap(self, part: Path, request: FirmwareRequest) -> str | None:
        """Replace a JSON-wrapped artifact in ``part`` by its bytes and return its MD5; None
        (``part`` untouched) when the answer is not an artifact."""
        ota = self.updater.ota
        assert ota is not None
        try:
            return await asyncio.to_thread(_unwrap_file, part, ota.max_bytes)
        except (OfferError, ThinxProtocolError) as exc:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            self.updater.record.set("failed", request.version, f"firmware answer: {exc}")
            raise UpdateError(f"firmware answer: {exc}") from exc

    async def _json_answer(self, part: Path, request: FirmwareRequest) -> bool:
        data = await asyncio.to_thread(part.read_bytes)
        await asyncio.to_thread(part.unlink, missing_ok=True)
        try:
            answer = parse_firmware_answer(data)
        except ThinxProtocolError as exc:
            self.updater.record.set("failed", request.version, f"firmware answer: {exc}")
            raise UpdateError(f"firmware answer: {exc}") from exc
        if answer.nothing_to_do:
            log.info("thinx_firmware_not_found", version=request.version, status=answer.reason)
            self.updater.record.set("idle", request.version, None)
            return False
        self.updater.record.set("failed", request.version, f"firmware refused: {answer.reason}")
        raise UpdateError(f"the server refused the firmware: {answer.reason}")

    async def _verify(
        self, part: Path, headers: Mapping[str, str], version: str
    ) -> tuple[Path, str]:
        """(artifact, its SHA-256): x-MD5 checked, then the signed release when required."""
        expected = headers.get("x-md5")
        if expected is None or not expected.strip():
            raise FirmwareRejected("the server sent no x-MD5 header")
        actual = await asyncio.to_thread(md5_file, part)
        if actual != expected.strip().lower():
            raise FirmwareRejected(f"MD5 is {actual}, x-MD5 says {expected.strip()[:64]}")
        ota = self.updater.ota
        assert ota is not None
        baseline = self.updater.baseline_version
        if ota.public_key is None:
            checksum = await asyncio.to_thread(sha256_file, part)
            if (problem := newer_problem(Offer(version, "", checksum), baseline)) is not None:
                raise FirmwareRejected(problem)
            final = part.with_name("firmware.bin")
            await asyncio.to_thread(part.replace, final)
            return final, checksum
        artifact, manifest_bytes, signature = await asyncio.to_thread(
            unpack_signed, part, part.parent / "release", ota.max_bytes
        )
        await asyncio.to_thread(part.unlink, missing_ok=True)
        from gateway.updates.signing import verify_manifest

        public_key = await asyncio.to_thread(ota.public_key.read_bytes)
        try:
            verify_manifest(public_key, manifest_bytes, signature)
            manifest = parse_manifest(manifest_bytes)
        except (UpdateError, OfferError) as exc:
            raise FirmwareRejected(str(exc)) from exc
        checksum = await asyncio.to_thread(sha256_file, artifact)
        size = (await asyncio.to_thread(artifact.stat)).st_size
        offer = Offer(version, "", checksum)
        problem = manifest_problem(
            manifest, offer, product_id=self.product_id, running_version=baseline
        )
        if problem is None and size != manifest.size:
            problem = f"the artifact ({size} bytes) is not the one the manifest signs"
        if problem is not None:
            raise FirmwareRejected(problem)
        log.info("ota_verified", version=version, signed=True, source="thinx")
        return artifact, checksum
