"""The dashboard shows a THiNX device: last check-in, version, and its status with the
console's marks (``#e`` error, ``#w`` warning), in a real headless chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from gateway.config import load_config
from gateway.devcloud.web import DevCloud
from tests.integration.harness import running_config
from tests.integration.test_dashboard import cloud, open_thing, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


async def test_a_thinx_device_shows_its_check_in_version_and_marked_status(
    cloud: DevCloud,  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    (thing,) = await cloud.create_things(1)
    info = json.loads((cloud.state_dir / "devcloud.json").read_text())["thinx"]
    thing.config.write_text(
        thing.config.read_text()
        + f"""\
thinx:
  url: {info["url"]}
  owner: "{info["owner"]}"
  api_key_file: {info["api_key_file"]}
  ca: {info["ca"]}
  alias: {thing.name}
  status: "relay {{relay}}"
  mqtt: {{host: {info["mqtt_host"]}, port: {info["mqtt_port"]}, ca: {info["ca"]}}}
"""
    )
    async with running_config(load_config(thing.config), tmp_path / "mock") as running:
        link = running.gateway.links["thinx"]
        await open_thing(page, cloud, thing.name)
        panel = page.locator("#thinx")
        await expect(panel).to_be_visible()
        await expect(panel).to_contain_text("relay off")
        await expect(panel).to_contain_text(str(link.registration.udid))
        await expect(panel).to_contain_text("edge-gateway-")
        running.gateway.shadow.connected = False  # the main link down: " #w"
        await expect(panel.locator(".mark.warning")).to_have_text("warning")
        await expect(panel.locator(".mark.error")).to_have_count(0)
