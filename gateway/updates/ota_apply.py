"""Applying a verified artifact, one class per ``ota.mode``: ``CommandApplier`` runs the
configured command on it; ``WheelApplier`` installs a hash-pinned bundle into the other A/B
slot, switches the ``current`` link and asks for the restart into it (exit 75, systemd).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from gateway.config import OtaConfig
from gateway.errors import UpdateError
from gateway.updates.checkin import Offer
from gateway.updates.ota_download import remove_other_artifacts
from gateway.updates.ota_record import UpdateRecord
from gateway.updates.ota_slots import read_slot, switch_slot
from gateway.updates.otastate import Attempt, Outcome, begin, other_slot, record
from gateway.updates.signing import extract_bundle

log = structlog.get_logger()

BUNDLE_DIR = "bundle"  # a wheel bundle is unpacked next to it, in <sha256>/bundle/


class Applier(Protocol):
    async def apply(self, offer: Offer, artifact: Path) -> None:
        """Apply the verified ``artifact`` of ``offer``; UpdateError or OSError on failure."""


class CommandApplier:
    """``ota.mode: command``: ``ota.command`` with ``{artifact}`` and ``{version}`` filled in
    (the artifact's path appended when the command does not name it)."""

    def __init__(self, ota: OtaConfig, record: UpdateRecord) -> None:
        self.ota = ota
        self._record = record

    async def apply(self, offer: Offer, artifact: Path) -> None:
        ota = self.ota
        assert ota.command is not None
        argv = [
            arg.replace("{artifact}", str(artifact)).replace("{version}", offer.version)
            for arg in ota.command
        ]
        if not any("{artifact}" in arg for arg in ota.command):
            argv.append(str(artifact))
        self._record.set("applying", offer.version)
        await run_command(argv, ota.command_timeout_s, what="update command")
        state = record(
            self._record.state,
            Outcome("applied", offer.version),
            installed=Attempt(offer.version, offer.checksum),
        )
        await self._record.save(state)
        await asyncio.to_thread(remove_other_artifacts, self._record.directory, keep=None)
        self._record.set("applied", offer.version)


class WheelApplier:
    """``ota.mode: wheel``: a new venv in the other slot, the bundle's wheels installed into it
    (no index, every hash pinned), its version checked, then the switch and the restart."""

    def __init__(self, ota: OtaConfig, record: UpdateRecord, restart: Callable[[], None]) -> None:
        self.ota = ota
        self._record = record
        self._restart = restart

    async def apply(self, offer: Offer, artifact: Path) -> None:
        ota = self.ota
        bundle = artifact.parent / BUNDLE_DIR
        await asyncio.to_thread(shutil.rmtree, bundle, ignore_errors=True)
        try:
            requirements = await asyncio.to_thread(extract_bundle, artifact, bundle)
        except UpdateError as exc:
            raise UpdateError(
                f"mode 'wheel' needs a bundle made by 'edge-gateway ota sign': {exc}"
            ) from exc
        root = ota.root
        active = await asyncio.to_thread(read_slot, root)
        if active is None:
            raise UpdateError(f"{root}/current is not a link to slots/a or slots/b")
        target = other_slot(active)
        slot = root / "slots" / target
        self._record.set("applying", offer.version)
        log.info("ota_installing", version=offer.version, slot=target)
        await asyncio.to_thread(shutil.rmtree, slot, ignore_errors=True)
        python = str(ota.python or sys.executable)
        venv = [python, "-m", "venv"]
        venv += ["--system-site-packages"] if ota.system_site_packages else []
        await run_command([*venv, str(slot)], ota.command_timeout_s, what="venv")
        pip = [str(slot / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        # Everything from the bundle, every file hash-pinned: never the index at update time.
        pinned = ["--no-index", "--require-hashes", "--find-links", str(bundle / "wheels")]
        argv = [*pip, "--no-input", *ota.pip_args, *pinned, "-r", str(requirements)]
        await run_command(argv, ota.command_timeout_s, "pip")
        version_argv = [str(slot / "bin" / "edge-gateway"), "--version"]
        output = await run_command(version_argv, 120, "new version")
        if output.split()[-1:] != [offer.version]:
            raise UpdateError(f"the wheel installs {output.strip()!r}, not {offer.version}")
        state = begin(
            self._record.state,
            slot=target,
            previous=active,
            version=offer.version,
            checksum=offer.checksum,
            now=time.time(),
        )
        await self._record.save(state)
        await asyncio.to_thread(switch_slot, root, target, active)
        log.warning("ota_switched", version=offer.version, slot=target, previous=active)
        self._record.set("applying", offer.version)
        self._restart()


async def run_command(argv: list[str], timeout_s: float, what: str) -> str:
    """Run ``argv`` (no shell) under a timeout; its output, or UpdateError on failure."""
    log.info("ota_command_started", what=what, argv=argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise UpdateError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise UpdateError(f"{what} did not finish within {timeout_s:g} s") from exc
    text = output.decode(errors="replace")
    if process.returncode != 0:
        tail = text.strip().splitlines()[-3:]
        raise UpdateError(f"{what} exited with {process.returncode}: {' | '.join(tail)}")
    log.info("ota_command_finished", what=what)
    return text
