"""The dashboard in a real headless browser: Debian's chromium driven by playwright, against a
running dev cloud (mosquitto, shadow service) and a real gateway on mock GPIO.

Chromium is launched from ``/usr/bin/chromium`` (or ``$EDGE_GATEWAY_CHROMIUM``): playwright never
downloads a browser here. A missing chromium fails these tests; ``scripts/bootstrap.sh test``
installs it. ``EDGE_GATEWAY_SCREENSHOT=docs/dashboard.png`` makes the screenshot test write the
README's picture.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from gateway.app import Gateway, build_gateway
from gateway.config import load_config
from gateway.devcloud.web import DevCloud
from gateway.ops.admin import request
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("EDGE_GATEWAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
THING = "thing-001"


@dataclass
class LiveGateway:
    gateway: Gateway
    task: asyncio.Task[None]
    socket: Path

    async def admin(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(request, self.socket, payload)

    async def stop(self) -> None:
        self.gateway.stop()
        await asyncio.wait_for(self.task, timeout=10)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


@pytest.fixture
async def gateway(cloud: DevCloud) -> AsyncIterator[LiveGateway]:
    """thing-001 of a batch, run in-process with mock GPIO as ``edge-gateway run`` would."""
    (thing,) = await cloud.create_things(1)
    # A short socket path: AF_UNIX paths are limited to 108 bytes, pytest's tmp_path is long.
    socket_dir = Path(tempfile.mkdtemp(prefix="egw-", dir="/tmp"))
    config = load_config(thing.config, overrides={"admin_socket": str(socket_dir / "admin.sock")})
    gateway = build_gateway(config, mock_gpio=True)
    task = asyncio.create_task(gateway.run(), name="gateway_under_test")
    live = LiveGateway(gateway, task, config.admin_socket)
    try:
        async with asyncio.timeout(10):
            await gateway.shadow.synced.wait()
        yield live
    finally:
        if not task.done():
            await live.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
async def page(cloud: DevCloud) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 760})
            errors: list[Exception] = []

            def on_page_error(error: Exception) -> None:  # playwright needs a plain function
                errors.append(error)

            page.on("pageerror", on_page_error)
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()


async def open_thing(page: Page, cloud: DevCloud, thing: str = THING) -> None:
    await page.goto(f"{cloud.dashboard_url}#thing={thing}")
    await expect(page.locator("#feed")).to_have_attribute("data-state", "live")
    await expect(page.locator("section.thing h2")).to_contain_text(thing)


def row(page: Page, key: str) -> Any:
    return page.locator(f'.shadow[data-shadow=""] tr[data-key="{key}"]')


async def test_flipping_the_led_toggle_drives_the_pin_and_the_reported_value_follows(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    await open_thing(page, cloud)
    led = row(page, "led")
    await expect(led.locator(".reported")).to_have_text("false")
    await led.get_by_role("switch").check()
    await expect(led.locator(".reported")).to_have_text("true")
    await expect(led.locator(".delta")).to_have_text("")
    status = await gateway.admin({"cmd": "status"})
    assert status["devices"]["led"] is True


async def test_moving_sliders_sets_pwm_and_servo_values_the_gateway_reports(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    await open_thing(page, cloud)
    fan, servo = row(page, "fan"), row(page, "servo")
    await expect(fan.locator(".reported")).to_have_text("0")
    await fan.get_by_role("slider").press("End")  # a 0-1 slider: End is 1.0
    await expect(fan.locator(".reported")).to_have_text("1")
    await servo.get_by_role("slider").press("Home")  # a -1..1 slider: Home is -1.0
    await expect(servo.locator(".reported")).to_have_text("-1")
    status = await gateway.admin({"cmd": "status"})
    assert status["devices"]["fan"] == 1.0 and status["devices"]["servo"] == -1.0


async def test_a_mock_button_press_shows_up_within_a_second(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    await open_thing(page, cloud)
    button = row(page, "button")
    await expect(button.locator(".reported")).to_have_text("false")
    await expect(button.locator(".control")).to_have_text("read-only")
    started = time.monotonic()
    await gateway.admin({"cmd": "mock_set", "name": "button", "value": True})
    await expect(button.locator(".reported")).to_have_text("true", timeout=1000)
    assert time.monotonic() - started < 1.0
    await expect(page.locator("#events li").first).to_contain_text("reported button=true")


async def test_a_stopped_gateway_shows_as_offline(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    await open_thing(page, cloud)
    item = page.locator(f'#things li[data-thing="{THING}"]')
    await expect(item).to_have_attribute("data-status", "online")
    await gateway.stop()
    await expect(item).to_have_attribute("data-status", "offline")
    await expect(page.locator("#thing-status")).to_have_text("offline")
    await expect(page.locator('#events li[data-kind="status"]').first).to_contain_text("offline")


async def test_fifty_things_are_listed_and_the_filter_narrows_them(
    cloud: DevCloud, page: Page
) -> None:
    await cloud.create_things(50)
    await page.goto(cloud.dashboard_url)
    await expect(page.locator("#things li")).to_have_count(50)
    await expect(page.locator("#counts")).to_contain_text("50 things")
    await page.locator("#filter").fill("thing-04")
    await expect(page.locator("#things li:visible")).to_have_count(10)
    await page.locator('#things li[data-thing="thing-042"] button').click()
    await expect(page.locator("#thing-status")).to_have_text("unknown")


async def test_the_page_shows_a_live_gateway_and_its_screenshot_is_saved(
    cloud: DevCloud, gateway: LiveGateway, page: Page, tmp_path: Path
) -> None:
    await cloud.create_things(12)
    for step in range(6):  # some history for the charts: a pressed button, a fan ramping up
        await gateway.admin({"cmd": "mock_set", "name": "button", "value": step % 2 == 0})
        await cloud.hub.update_desired(THING, {"fan": round(0.1 * step, 1)})
        await asyncio.sleep(0.5)
    await cloud.hub.update_desired(THING, {"led": True, "fan": 0.6, "servo": -0.3})
    await gateway.admin({"cmd": "mock_set", "name": "motion", "value": True})
    await open_thing(page, cloud)
    await expect(row(page, "fan").locator(".reported")).to_have_text("0.6")
    await expect(row(page, "motion").locator(".reported")).to_have_text("true")
    await expect(page.locator("#thing-status")).to_have_text("online")
    target = Path(os.environ.get("EDGE_GATEWAY_SCREENSHOT") or tmp_path / "dashboard.png")
    await page.screenshot(path=str(target))
    assert target.read_bytes().startswith(b"\x89PNG")


# --- charts of the last hour, plurals, OTA in words -------------------------------------------


def chart(page: Page, key: str) -> Any:
    return row(page, key).locator("svg.chart")


async def test_the_buttons_chart_gains_a_point_when_the_mock_button_is_pressed(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    await open_thing(page, cloud)
    await expect(row(page, "button").locator(".reported")).to_have_text("false")
    before = int(await chart(page, "button").get_attribute("data-points") or "0")
    assert before >= 1  # the first report is already plotted
    await gateway.admin({"cmd": "mock_set", "name": "button", "value": True})
    await expect(chart(page, "button")).to_have_attribute("data-points", str(before + 1))
    await expect(chart(page, "button").locator("circle.point")).to_have_count(before + 1)


async def test_a_desired_change_is_marked_on_the_outputs_chart(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    await open_thing(page, cloud)
    led = row(page, "led")
    await expect(led.locator(".reported")).to_have_text("false")
    await expect(chart(page, "led").locator("path.desired-mark")).to_have_count(0)
    await led.get_by_role("switch").check()
    await expect(led.locator(".reported")).to_have_text("true")
    await expect(chart(page, "led").locator("path.desired-mark")).to_have_count(1)
    await expect(chart(page, "led")).to_have_attribute(
        "aria-label", re.compile("1 desired change,")
    )


async def test_a_page_loaded_later_shows_the_history_it_missed(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    for value in (True, False, True):
        await gateway.admin({"cmd": "mock_set", "name": "button", "value": value})
        async with asyncio.timeout(5):
            while cloud.hub.thing(THING)["shadows"][""]["reported"]["button"] is not value:  # type: ignore[index]
                await asyncio.sleep(0.02)
    await open_thing(page, cloud)
    await expect(chart(page, "button")).to_have_attribute("data-points", "4")  # false, then 3


async def test_one_thing_is_counted_in_the_singular(cloud: DevCloud, page: Page) -> None:
    await cloud.create_things(1)
    await page.goto(cloud.dashboard_url)
    await expect(page.locator("#counts")).to_have_text("1 thing · 0 online · 0 offline · 1 unknown")


async def test_the_ota_state_is_shown_in_words(
    cloud: DevCloud, gateway: LiveGateway, page: Page
) -> None:
    gateway.gateway.report_gateway_status(
        "ota", {"state": "rolled_back", "version": "0.3.0", "error": "not healthy in 300 s"}
    )
    await open_thing(page, cloud)
    ota = page.locator("#ota dd").nth(1)
    await expect(page.locator("#ota dt").nth(1)).to_have_text("OTA")
    await expect(ota).to_have_text("rolled back 0.3.0: not healthy in 300 s")
