"""One update at a time whichever source offers it: a THiNX firmware and a Provision API offer
share the Updater's lock (real files, command mode, fake HTTP sides that can be held mid-way)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.links.thinx.firmware import ThinxFirmware
from gateway.links.thinx.ports import FirmwareRequest
from gateway.updates.ota import Updater
from tests.unit.test_ota_updater import ARTIFACT, OFFER, FakeHttp, command_config

THINX_FIRMWARE = b"thinx firmware " * 500
THINX_URL = "https://thinx.example/device/firmware?ott=abc"


@dataclass
class Downloaded:
    size: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeThinxHttp:
    """Serves one firmware with its x-MD5; ``gate`` holds the download until set."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.downloads = 0
        self.gate: asyncio.Event | None = None

    async def download(self, url: str, dest: Path, **_: Any) -> Downloaded:
        self.downloads += 1
        if self.gate is not None:
            await self.gate.wait()
        dest.write_bytes(self.body)
        md5 = hashlib.md5(self.body, usedforsecurity=False).hexdigest()
        return Downloaded(len(self.body), {"x-md5": md5, "content-type": "application/x-binary"})

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used by the firmware path")


async def until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_thinx_firmware_waits_for_a_provision_update_to_finish(tmp_path: Path) -> None:
    updater = Updater(command_config(tmp_path))
    provision = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    provision.gate = asyncio.Event()
    thinx_http = FakeThinxHttp(THINX_FIRMWARE)
    firmware = ThinxFirmware(updater, product_id="gw")
    first = asyncio.create_task(updater.check_once(provision))  # type: ignore[arg-type]
    await until(lambda: provision.downloads == 1)
    second = asyncio.create_task(firmware(thinx_http, FirmwareRequest("fw-3", THINX_URL)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert thinx_http.downloads == 0  # held back while the Provision API's update runs
    provision.gate.set()
    await first
    assert await second is True
    assert thinx_http.downloads == 1
    assert (tmp_path / "flashed").read_bytes() == THINX_FIRMWARE  # applied after, not during
    assert updater.status == {"state": "applied", "version": "fw-3", "error": None}


async def test_a_provision_update_waits_for_a_thinx_firmware_to_finish(tmp_path: Path) -> None:
    updater = Updater(command_config(tmp_path))
    provision = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    thinx_http = FakeThinxHttp(THINX_FIRMWARE)
    thinx_http.gate = asyncio.Event()
    firmware = ThinxFirmware(updater, product_id="gw")
    first = asyncio.create_task(firmware(thinx_http, FirmwareRequest("fw-1", THINX_URL)))  # type: ignore[arg-type]
    await until(lambda: thinx_http.downloads == 1)
    second = asyncio.create_task(updater.check_once(provision))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert provision.downloads == 0  # held back while THiNX's firmware runs
    thinx_http.gate.set()
    assert await first is True
    await second
    assert provision.downloads == 1
    assert (tmp_path / "flashed").read_bytes() == ARTIFACT
    assert updater.status == {"state": "applied", "version": "fw-2", "error": None}


async def test_a_thinx_firmware_applied_meanwhile_by_the_provision_api_is_skipped(
    tmp_path: Path,
) -> None:
    updater = Updater(command_config(tmp_path))
    provision = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    provision.gate = asyncio.Event()
    thinx_http = FakeThinxHttp(THINX_FIRMWARE)
    firmware = ThinxFirmware(updater, product_id="gw")
    first = asyncio.create_task(updater.check_once(provision))  # type: ignore[arg-type]
    await until(lambda: provision.downloads == 1)
    version = str(OFFER["version"])
    second = asyncio.create_task(firmware(thinx_http, FirmwareRequest(version, THINX_URL)))  # type: ignore[arg-type]
    provision.gate.set()
    await first
    assert await second is False
    assert thinx_http.downloads == 0
    assert (tmp_path / "flashed").read_bytes() == ARTIFACT
