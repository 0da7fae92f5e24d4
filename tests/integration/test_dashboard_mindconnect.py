"""The dashboard's MindConnect panel in real headless Chromium: an agent's latest values appear
as it publishes them, and a command typed on the page reaches the agent and shows its answer.
The agent is an aiomqtt client with a certificate from the dev cloud's tenant CA."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from playwright.async_api import Page, async_playwright, expect

from gateway.devcloud.mindconnect import MindConnectSide, agent_topic, write_agent_credentials
from gateway.devcloud.web import DevCloud
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_devcloud_web import running_devcloud
from tests.integration.test_mindconnect_devcloud import agent_client, timeseries

pytestmark = pytest.mark.integration


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


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


@pytest.fixture
async def agent(cloud: DevCloud, tmp_path: Path) -> AsyncIterator[tuple[str, aiomqtt.Client]]:
    """Agent pi1, connected, answering every command EXECUTED with the payload's device."""
    side = cloud.mindconnect
    answer = await asyncio.to_thread(side.tenant.issue_agent_certificate, "pi1")
    creds = await asyncio.to_thread(
        write_agent_credentials, answer, tmp_path / "pi1", broker_ca=side.broker_ca
    )
    client_id = answer["clientId"]
    async with agent_client(side, client_id, creds) as client:
        await client.subscribe(agent_topic(side.tenant.name, client_id, "i/cmd_v3/c"), 1)
        task = asyncio.create_task(answer_commands(side, client_id, client))
        try:
            yield client_id, client
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def answer_commands(side: MindConnectSide, client_id: str, client: aiomqtt.Client) -> None:
    async for message in client.messages:
        command = json.loads(message.payload)  # type: ignore[arg-type]
        device = command["data"]["payload"].get("device")
        reply = {
            "id": f"answer-{command['id']}",
            "requestId": command["id"],
            "data": {
                "timestamp": "2026-12-01T10:00:00.000Z",
                "jobId": command["data"]["jobId"],
                "status": "EXECUTED",
                "response": {"message": f"{device} set"},
            },
        }
        await client.publish(
            agent_topic(side.tenant.name, client_id, "o/cmd_v3/u"), json.dumps(reply), 1
        )


async def test_agent_panel_shows_latest_values_as_they_arrive(
    cloud: DevCloud, agent: tuple[str, aiomqtt.Client], page: Page
) -> None:
    client_id, client = agent
    await page.goto(f"{cloud.dashboard_url}#agent={client_id}")
    await expect(page.locator("#feed")).to_have_attribute("data-state", "live")
    await expect(page.locator("section.agent h2")).to_contain_text(client_id)
    topic = agent_topic(cloud.mindconnect.tenant.name, client_id, "o/mc_v3/ts")
    await client.publish(topic, timeseries(("temp", "21.5"), ("button", "true")), 1)
    temp = page.locator('#mc-latest tr[data-point="temp"] td.value').first
    await expect(temp).to_have_text("21.5")
    await client.publish(
        topic, timeseries(("temp", "22.0"), timestamp="2026-12-01T10:00:05.000Z"), 1
    )
    await expect(temp).to_have_text("22.0")
    listed = page.locator(f'#agents li[data-agent="{client_id}"]')
    await expect(listed).to_contain_text("2 messages")


async def test_a_command_sent_from_the_page_is_answered_and_the_answer_shown(
    cloud: DevCloud, agent: tuple[str, aiomqtt.Client], page: Page
) -> None:
    client_id, _ = agent
    await page.goto(f"{cloud.dashboard_url}#agent={client_id}")
    await expect(page.locator("#feed")).to_have_attribute("data-state", "live")
    payload = {"commandType": "set", "device": "led", "value": True}
    await page.locator("#mc-payload").fill(json.dumps(payload))
    await page.locator("#mc-send").click()
    command = page.locator("#mc-commands li").first
    await expect(command).to_have_attribute("data-status", "EXECUTED")
    await expect(command).to_contain_text("led set")
    (sent,) = cloud.mindconnect.store.commands(client_id)
    assert dict(sent.payload) == payload
    answer = cloud.mindconnect.store.answer_to(sent.id)
    assert answer is not None
    assert answer.status == "EXECUTED"


async def test_a_payload_that_is_not_a_json_object_is_refused_on_the_page(
    cloud: DevCloud, agent: tuple[str, aiomqtt.Client], page: Page
) -> None:
    client_id, _ = agent
    await page.goto(f"{cloud.dashboard_url}#agent={client_id}")
    await expect(page.locator("#feed")).to_have_attribute("data-state", "live")
    await page.locator("#mc-payload").fill("[1, 2]")
    await page.locator("#mc-send").click()
    await expect(page.locator("#toast")).to_contain_text("must be a JSON object")
    assert cloud.mindconnect.store.commands(client_id) == []
