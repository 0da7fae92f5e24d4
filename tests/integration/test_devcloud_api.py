"""The dashboard's HTTP API as a script uses it (no browser): unknown things, closed event streams,
the charts' history, and ``edge-gateway devcloud --things`` printing commands that work."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.devcloud import ShadowClient
from gateway.devcloud.web import DevCloud
from tests.integration.test_devcloud_web import page_headers, running_devcloud

pytestmark = pytest.mark.integration
THING = "thing-001"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        await running.create_things(1)
        yield running


@pytest.fixture
async def http(cloud: DevCloud) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cloud.dashboard_url) as session:
        yield session


async def next_message(response: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            line = await response.content.readline()
            assert line, "the event stream ended"
            if line.startswith(b"data: "):
                message: dict[str, Any] = json.loads(line[6:])
                return message


async def test_setting_desired_of_an_unknown_thing_is_404_and_creates_nothing(
    cloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    headers = await page_headers(http, cloud.dashboard_url)
    body = {"desired": {"led": True}, "shadow": None}
    async with http.post("/api/things/pi-typo/desired", json=body, headers=headers) as response:
        assert response.status == 404
        assert await response.json() == {
            "error": "no thing named 'pi-typo' in this dev cloud",
            "code": 404,
        }
    async with http.get("/api/things") as response:
        assert [thing["thing"] for thing in await response.json()] == [THING]
    admin = cloud.broker.credentials(cloud.broker.admin_identities[0])
    async with ShadowClient(cloud.broker.host, cloud.broker.port, admin) as client:
        assert await client.get("pi-typo") is None


async def test_a_closed_event_stream_is_logged_once_without_a_traceback(
    cloud: DevCloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        session = aiohttp.ClientSession(cloud.dashboard_url)
        feed = await session.get("/api/events")
        assert (await next_message(feed))["type"] == "snapshot"
        feed.close()  # as a closed tab: the connection goes away mid-stream
        await session.close()
        async with asyncio.timeout(5):
            # The server notices when it next writes: give it something to send.
            while not any(entry["event"] == "dashboard_stream_closed" for entry in logs):
                cloud.hub.add_thing(THING)
                await asyncio.sleep(0.05)
        for _ in range(5):
            cloud.hub.add_thing(THING)
            await asyncio.sleep(0.02)
    closed = [entry for entry in logs if entry["event"] == "dashboard_stream_closed"]
    assert [entry["log_level"] for entry in closed] == ["info"]
    assert not [record for record in caplog.records if record.exc_info is not None]
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_a_fresh_page_load_gets_the_last_hours_points_of_each_resource(
    cloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    await cloud.hub.update_desired(THING, {"led": True, "fan": 0.25, "label": "not plotted"})
    history: dict[str, Any] = {}
    async with asyncio.timeout(10):  # the points are recorded when the shadow's echo arrives
        while not {"led", "fan"} <= set(history):
            async with http.get("/api/things") as response:
                (thing,) = await response.json()
            history = thing["history"].get("", {})
            await asyncio.sleep(0.02)
    assert set(history) == {"led", "fan"}
    assert [value for _, value in history["led"]["desired"]] == [1.0]
    assert [value for _, value in history["fan"]["desired"]] == [0.25]


async def test_the_event_stream_sends_each_new_point_once(
    cloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    async with http.get("/api/events") as feed:
        snapshot = await next_message(feed)
        assert snapshot["type"] == "snapshot" and isinstance(snapshot["now"], float)
        await cloud.hub.update_desired(THING, {"fan": 0.5})
        message = await next_message(feed)
        while message["type"] != "points":
            message = await next_message(feed)
    assert message["thing"] == THING
    (point,) = message["points"]
    assert {k: point[k] for k in ("shadow", "key", "kind", "value")} == {
        "shadow": "",
        "key": "fan",
        "kind": "desired",
        "value": 0.5,
    }


# --- the printout of `edge-gateway devcloud --things` -----------------------------------------


async def run_printed(command: str, timeout: float = 20) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(timeout):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_commands_devcloud_prints_for_its_things_work_as_printed() -> None:
    # A short state folder: each thing's admin socket lives in it (AF_UNIX paths: 108 bytes).
    state = Path(tempfile.mkdtemp(prefix="egw-dc-", dir="/tmp"))
    devcloud = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "devcloud", "--things", "1"],
        *["--state-dir", str(state), "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"],
        *["--mqtt-port", "0"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    gateway: asyncio.subprocess.Process | None = None
    assert devcloud.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(20):
            while not lines or "Press Ctrl+C" not in lines[-1]:
                line = (await devcloud.stdout.readline()).decode()
                assert line, f"devcloud exited early: {''.join(lines)}"
                lines.append(line)
        text = "".join(lines)
        assert "1 thing; its folder holds" in text and "1 things" not in text
        commands = [line.strip() for line in lines if line.startswith("  ") and " -c " in line]
        run = next(c for c in commands if " run --mock-gpio " in c)
        status = next(c for c in commands if " status " in c)
        press = next(c for c in commands if " mock set button true " in c)
        # As printed: the program is a path that exists (the virtualenv's), not a bare name,
        # and the config's own comment says the same command.
        assert Path(shlex.split(run)[0]).is_file()
        assert f"# Ready to run: {run}\n" in text
        gateway = await asyncio.create_subprocess_exec(
            *shlex.split(run),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(20):
            while (await run_printed(status))[0] != 0:
                await asyncio.sleep(0.2)
        code, output = await run_printed(press)
        assert code == 0, output
        code, output = await run_printed(status.replace(" status ", " status --json "))
        assert code == 0, output
        assert json.loads(output)["devices"]["button"] is True
    finally:
        for process in (gateway, devcloud):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGINT)
                try:
                    async with asyncio.timeout(10):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
        shutil.rmtree(state, ignore_errors=True)


# --- docs/devcloud.md against the routes and a running dev cloud -----------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "devcloud.md"


def test_every_route_of_the_dev_cloud_is_documented(cloud: DevCloud) -> None:
    from gateway.devcloud.provision import provision_app
    from gateway.devcloud.web.dashboard import dashboard_app

    text = DOCS.read_text()
    missing = []
    for app in (dashboard_app(cloud.hub), provision_app(cloud.provision)):
        for route in app.router.routes():
            if route.method == "HEAD":
                continue  # aiohttp adds HEAD beside every GET
            path = route.resource.canonical if route.resource is not None else "?"
            path = "/static/..." if path == "/static" else path
            if f"`{route.method} {path}" not in text:
                missing.append(f"{route.method} {path}")
    assert missing == []


async def test_the_documented_curl_example_sets_desired(cloud: DevCloud) -> None:
    section = DOCS.read_text().split("### `POST /api/things/{thing}/desired`", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    base = cloud.dashboard_url.rstrip("/")
    code, output = await run_printed_script(script.replace("http://127.0.0.1:8080", base))
    assert code == 0, output
    assert json.loads(output) == {"version": 1}
    thing = cloud.hub.thing(THING)
    assert thing is not None
    async with asyncio.timeout(5):
        while not thing["shadows"] or thing["shadows"][""]["desired"] != {"led": True, "fan": 0.5}:
            await asyncio.sleep(0.02)
            thing = cloud.hub.thing(THING)
            assert thing is not None


async def run_printed_script(script: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-eu",
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(20):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()
