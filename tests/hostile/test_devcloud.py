"""Issue 19, dev cloud: hostile things on the real broker and hostile pages in a real browser.

Every test runs a whole ``DevCloud`` (mosquitto, shadow service, dashboard feed, Provision API)
and attacks it from outside: a thing (its own certificate) publishes on the topics its ACL
allows, a page on another local origin drives the dashboard from headless Chromium, or a client
sends forged HTTP. Each asserts the attack changed nothing and the dev cloud still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright, expect

from gateway.devcloud import ShadowClient, ShadowRejectedError, ShadowService, ShadowStore
from gateway.devcloud.broker import MosquittoBroker
from gateway.devcloud.web import DevCloud
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_devcloud import thing_client
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration
THING = "pi-target"
NESTING_MESSAGE = "JSON contains too many levels of nesting; maximum is 6"
REPLY_TIMEOUT_S = 3.0


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


@pytest.fixture
async def browser_page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


def desired_of(cloud: DevCloud, thing: str = THING) -> tuple[dict[str, Any] | None, int | None]:
    """(desired, version) of the classic shadow as the dev cloud's store holds it."""
    document = cloud.service.store.document(thing)
    if document is None:
        return None, None
    return document["state"].get("desired"), document["version"]


async def page_token(session: aiohttp.ClientSession, url: str) -> str:
    """The token the dashboard's page carries ("" where the page has none)."""
    async with session.get(url) as response:
        found = re.search(r'<meta name="dashboard-token" content="([^"]*)">', await response.text())
    return found[1] if found else ""


def strict_json(text: str) -> Any:
    """Parse as a browser's JSON.parse does: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@contextlib.asynccontextmanager
async def thing_replies(cloud: DevCloud, thing: str) -> AsyncIterator[aiomqtt.Client]:
    """A thing's own MQTT connection, subscribed to its update replies."""
    async with thing_client(cloud.broker, thing) as device:
        await device.subscribe(f"$aws/things/{thing}/shadow/update/+", qos=1)
        yield device


async def reply_to(device: aiomqtt.Client, topic: str, payload: bytes) -> tuple[str, Any]:
    """Publish one update and return (accepted|rejected, body) of the service's answer."""
    await device.publish(topic, payload, qos=1)
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        async for message in device.messages:
            suffix = message.topic.value.rsplit("/", 1)[-1]
            if suffix in ("accepted", "rejected"):
                return suffix, strict_json(bytes(message.payload).decode())  # type: ignore[arg-type]
    raise AssertionError("reply stream ended")


async def assert_devcloud_answers(cloud: DevCloud, thing: str) -> None:
    """A normal update and get still work, through the service and the dashboard's feed."""
    admin = cloud.broker.credentials(cloud.broker.admin_identities[0])
    async with ShadowClient(
        cloud.broker.host, cloud.broker.port, admin, timeout=REPLY_TIMEOUT_S
    ) as client:
        accepted = await client.update(thing, {"desired": {"after": 1}})
        document = await client.get(thing)
    assert document is not None and document["version"] == accepted["version"]
    assert document["state"]["desired"]["after"] == 1
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while True:
            seen = cloud.hub.thing(thing)
            if (
                seen is not None
                and seen["shadows"].get("", {}).get("version") == accepted["version"]
            ):
                break
            await asyncio.sleep(0.02)


# --- a thing's hostile shadow updates -------------------------------------------------------


async def test_thing_reporting_deep_nesting_is_rejected_and_the_devcloud_lives(
    cloud: DevCloud,
) -> None:
    thing = "pi-nester"
    topic = f"$aws/things/{thing}/shadow/update"
    deep = 60_000  # 120 KB: under the 128 KB message limit, far past json.loads' recursion limit
    hostile = [
        (b'{"state":{"reported":{"x":' + b"[" * deep + b"]" * deep + b"}}}", 400, NESTING_MESSAGE),
        (b'{"state":{"reported":{"x":' + b"[" * 900 + b"]" * 900 + b"}}}", 400, NESTING_MESSAGE),
        (b'{"state":{"reported":{"x":[[[[[[1]]]]]]}}}', 400, NESTING_MESSAGE),
        (b'{"get":' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, NESTING_MESSAGE),
        (b'{"state":{"reported":{"x":"' + b"y" * 140_000 + b'"}}}', 413, None),
    ]
    async with thing_replies(cloud, thing) as device:
        for payload, code, message in hostile:
            outcome, body = await reply_to(device, topic, payload)
            assert (outcome, body["code"]) == ("rejected", code), body
            if message is not None:
                assert body["message"] == message
        outcome, body = await reply_to(device, topic, b'{"state":{"reported":{"x":[[[[[1]]]]]}}}')
        assert outcome == "accepted", body
    assert cloud.service.store.document(thing)["state"]["reported"] == {"x": [[[[[1]]]]]}  # type: ignore[index]
    await assert_devcloud_answers(cloud, thing)


async def test_thing_reporting_huge_numbers_is_rejected_and_the_dashboard_stays_json(
    cloud: DevCloud,
) -> None:
    thing = "pi-numbers"
    topic = f"$aws/things/{thing}/shadow/update"
    huge = b"9" * 401  # stored as AWS stores it: refusing it is the gateway's job
    async with thing_replies(cloud, thing) as device:
        for number, detail in [
            (b"1e400", "a number out of range"),  # would be stored as inf, sent as Infinity
            (b"-" + b"1" * 400 + b".5", "a number out of range"),
            (b"9" * 5000, "a number longer than 1000 characters"),
        ]:
            payload = b'{"state":{"reported":{"n":' + number + b"}}}"
            outcome, body = await reply_to(device, topic, payload)
            assert (outcome, body["code"]) == ("rejected", 400), body
            assert body["message"] == f"Payload contains invalid json: {detail}"
        outcome, body = await reply_to(device, topic, b'{"state":{"reported":{"n":' + huge + b"}}}")
        assert outcome == "accepted", body
    await assert_devcloud_answers(cloud, thing)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cloud.dashboard_url}api/things") as response,
    ):
        things = {t["thing"]: t for t in strict_json(await response.text())}
    assert things[thing]["shadows"][""]["reported"]["n"] == int(huge)
    state = strict_json((cloud.state_dir / "shadows.json").read_text())
    assert all(s["thing"] != thing or "Infinity" not in json.dumps(s) for s in state["shadows"])


async def test_hostile_messages_on_the_dashboards_feed_topics_do_not_end_the_devcloud(
    cloud: DevCloud,
) -> None:
    thing = "pi-spoofer"
    deep = b"[" * 60_000 + b"]" * 60_000
    prefix = f"$aws/things/{thing}/shadow"
    async with thing_client(cloud.broker, thing) as device:
        # A thing may publish on its own status and shadow reply topics (ACL $aws/things/X/#).
        await device.publish(f"things/{thing}/status", b'{"status":' + deep + b"}", qos=1)
        await device.publish(f"things/{thing}/status", b"x" * 100_000, qos=1)
        await device.publish(f"{prefix}/update/documents", b'{"current":' + deep + b"}", qos=1)
        await device.publish(
            f"{prefix}/update/documents",
            b'{"current":{"version":5,"state":{"desired":"not an object"}},"timestamp":1}',
            qos=1,
        )
        await device.publish(
            f"{prefix}/update/documents", b'{"current":{"version":' + b"7" * 5000 + b"}}", qos=1
        )
        await device.publish(f"{prefix}/update/accepted", b'{"clientToken":' + deep + b"}", qos=1)
        message = json.dumps({"code": 400, "message": "m" * 100_000}).encode()
        await device.publish(f"{prefix}/update/rejected", message, qos=1)
        await device.publish(f"things/{thing}/status", b"online", qos=1)
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while (seen := cloud.hub.thing(thing)) is None or seen["status"] != "online":
                await asyncio.sleep(0.02)
    assert all(len(event["text"]) <= 300 for event in seen["events"])
    await assert_devcloud_answers(cloud, thing)


async def test_a_failure_while_handling_one_request_is_answered_500_and_the_service_lives(
    broker: MosquittoBroker, shadow_client: ShadowClient
) -> None:
    class ClockFailingOnce:
        """Any exception while handling one message, here from the store's own clock."""

        def __init__(self) -> None:
            self.failed = False

        def __call__(self) -> float:
            if not self.failed:
                self.failed = True
                raise OSError("clock unavailable")
            return 1_700_000_000.0

    service = ShadowService(
        broker.host,
        broker.port,
        broker.credentials(broker.service_identity),
        store=ShadowStore(clock=ClockFailingOnce()),
    )
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready=ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        thing = "pi-failing-once"
        with pytest.raises(ShadowRejectedError) as refused:
            await asyncio.wait_for(shadow_client.update(thing, {"desired": {"on": True}}), 5)
        assert (refused.value.code, refused.value.message) == (500, "Internal service failure")
        assert service.store.document(thing) is None
        accepted = await asyncio.wait_for(shadow_client.update(thing, {"desired": {"on": True}}), 5)
        assert accepted["version"] == 1
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.wait({task})


# --- the dashboard's API: other origins, forged Host, missing JSON/Origin/token -------------

ATTACK_PAGE = """<!doctype html>
<html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="TARGET">
  <input type="hidden" name='{"desired":{"led":true},"shadow":null,"pad":"' value='"}'>
</form>
<script>
async function attack() {
  const target = "TARGET";
  const body = JSON.stringify({ desired: { led: true }, shadow: null });
  const results = {};
  try {
    // No preflight: a "simple" request, answered opaquely, but the server still acts on it.
    await fetch(target,
      { method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" }, body });
    results.noCors = "sent";
  } catch (error) { results.noCors = String(error); }
  try {
    const response = await fetch(target, { method: "POST", body,
      headers: { "Content-Type": "application/json", "X-Dashboard-Token": "guessed" } });
    results.cors = response.status;
  } catch (error) { results.cors = String(error); }
  await new Promise((resolve) => {
    document.querySelector("iframe").onload = resolve;
    document.getElementById("form").submit();
  });
  results.form = "sent";
  return results;
}
</script>
</body></html>
"""


@contextlib.asynccontextmanager
async def attacker_site(target: str) -> AsyncIterator[str]:
    """Another local origin (same host, another port) serving the attack page."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK_PAGE.replace("TARGET", target), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_another_local_origins_page_cannot_set_desired_through_the_dashboard(
    cloud: DevCloud, browser_page: Page
) -> None:
    await cloud.hub.update_desired(THING, {"led": False})
    target = f"{cloud.dashboard_url}api/things/{THING}/desired"
    async with attacker_site(target) as attacker:
        await browser_page.goto(attacker)
        results = await browser_page.evaluate("attack()")
    assert results["noCors"] == "sent" and results["form"] == "sent"
    assert results["cors"] != 200  # the preflight is not answered: the browser never sends it
    assert desired_of(cloud) == ({"led": False}, 1)
    # The dashboard's own page still sets it, with the same kind of request.
    await browser_page.goto(cloud.dashboard_url)
    status = await browser_page.evaluate(
        """async (target) => (await fetch(target, { method: "POST",
             headers: { "Content-Type": "application/json", "X-Dashboard-Token":
               document.querySelector('meta[name="dashboard-token"]').content },
             body: JSON.stringify({ desired: { led: true }, shadow: null }) })).status""",
        target,
    )
    assert status == 200
    assert desired_of(cloud) == ({"led": True}, 2)


async def test_a_forged_host_header_is_refused_even_with_the_token(cloud: DevCloud) -> None:
    await cloud.hub.update_desired(THING, {"led": False})
    forged = f"rebound.attacker.example:{cloud.dashboard_port}"
    async with aiohttp.ClientSession() as session:
        token = await page_token(session, cloud.dashboard_url)
        headers = {"Host": forged, "Origin": f"http://{forged}", "X-Dashboard-Token": token}
        body = {"desired": {"led": True}, "shadow": None}
        url = f"{cloud.dashboard_url}api/things/{THING}/desired"
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 403
            assert "error" in await response.json()
        # Rebinding would also let the attacker read the page (and its token) and the things.
        for path in ("", "api/things"):
            async with session.get(f"{cloud.dashboard_url}{path}", headers={"Host": forged}) as got:
                assert got.status == 403
                assert token not in await got.text()
    assert desired_of(cloud) == ({"led": False}, 1)


async def test_a_change_without_json_same_origin_and_the_page_token_is_refused(
    cloud: DevCloud,
) -> None:
    await cloud.hub.update_desired(THING, {"led": False})
    own = cloud.dashboard_url.rstrip("/")
    url = f"{cloud.dashboard_url}api/things/{THING}/desired"
    body = json.dumps({"desired": {"led": True}, "shadow": None})
    async with aiohttp.ClientSession() as session:
        token = await page_token(session, cloud.dashboard_url)
        good = {"Content-Type": "application/json", "Origin": own, "X-Dashboard-Token": token}
        refused: list[tuple[dict[str, str | None], int]] = [
            ({"Content-Type": "text/plain"}, 415),
            ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ({"Origin": None}, 403),
            ({"Origin": "null"}, 403),
            ({"Origin": f"http://127.0.0.1:{cloud.dashboard_port + 1}"}, 403),
            ({"Origin": own, "Sec-Fetch-Site": "same-site"}, 403),
            ({"X-Dashboard-Token": None}, 403),
            ({"X-Dashboard-Token": "x" + token}, 403),
        ]
        for change, status in refused:
            headers = {k: v for k, v in {**good, **change}.items() if v is not None}
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == status, change
                assert "error" in await response.json()
            assert desired_of(cloud) == ({"led": False}, 1), change
        oversized = json.dumps({"desired": {"led": True, "pad": "x" * 70_000}})
        async with session.post(url, data=oversized, headers=good) as response:
            assert response.status == 413
            assert "error" in await response.json()
        async with session.post(url, data=body, headers=good) as response:
            assert response.status == 200
    assert desired_of(cloud) == ({"led": True}, 2)


# --- the dashboard's own input path refuses what the shadow refuses -------------------------


async def test_the_dashboard_input_refuses_values_the_shadow_refuses_with_a_clear_error(
    cloud: DevCloud, browser_page: Page
) -> None:
    thing = "pi-typist"
    await cloud.hub.update_desired(thing, {"label": "a"})
    await browser_page.goto(f"{cloud.dashboard_url}#thing={thing}")
    field = browser_page.get_by_role("textbox", name=f"label of {thing}")
    toast = browser_page.locator("#toast")
    for typed, error in [
        ("9" * 5000, "a number longer than 1000 characters"),
        ("1e400", "a number out of range"),
        ("[" * 6 + "]" * 6, NESTING_MESSAGE),
        ("[" * 1000 + "]" * 1000, NESTING_MESSAGE),
    ]:
        await field.fill(typed)
        await field.press("Tab")  # commits the value ("change")
        await expect(toast).to_contain_text(error)
        await expect(toast).to_contain_text(f"{thing}: setting label failed")
        await browser_page.evaluate("document.getElementById('toast').textContent = ''")
        assert desired_of(cloud, thing) == ({"label": "a"}, 1), typed
    # A number JSON.parse cannot hold exactly is sent as typed, not as Infinity -> null.
    await field.fill("9" * 401)
    await field.press("Tab")
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while desired_of(cloud, thing)[1] != 2:
            await asyncio.sleep(0.02)
    assert desired_of(cloud, thing) == ({"label": int("9" * 401)}, 2)
