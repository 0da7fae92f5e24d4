"""The metrics endpoint: its small HTTP server on a real socket (routes, bounds, slow and
flooding clients), the exposition checked whole by ``promtool check metrics`` (Debian's
``prometheus`` package, installed by scripts/bootstrap.sh's test set-up), and a real
``edge-gateway run`` with metrics and check-in against the dev cloud that imports no aiohttp."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.ops import metrics
from gateway.ops.metrics import (
    LEGACY_NON_BASE_UNITS,
    OTA_STATES,
    process_figures,
    render_prometheus,
    serve_metrics,
)
from gateway.updates.otastate import OtaPhase
from tests.integration.test_devcloud_web import running_devcloud
from tests.integration.test_ota import configure

ROOT = Path(__file__).resolve().parents[2]

FULL_STATUS: dict[str, Any] = {
    "version": "1.2.3",
    "thing": 'pi-"1"\\x',
    "connected": True,
    "synced": True,
    "in_flight": 0,
    "queued": 1,
    "outbox_depth": 3,
    "outbox_in_memory": False,
    "outbox_in_memory_entries": 0,
    "outbox_dropped_events": 2,
    "last_checkin_at": 1795435200.0,
    "certificate_days_left": 41.5,
    "certificate_expires_at": 1798999999.0,
    "shadow_version": 7,
    "healthy": True,
    "devices": {"led": True},
    "errors": {},
    "reconnects": 1,
    "counters": {"deltas_applied": 5, "deltas_rejected": 1, "deltas_stale": 0},
    "messages_dropped": 0,
    "reloads_applied": 1,
    "reloads_rejected": 0,
    "ota": {"state": "downloading", "version": "2.0", "error": None},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(status: dict[str, Any]) -> AsyncIterator[int]:
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve_metrics("127.0.0.1", port, lambda: status, ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield port
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw ``request`` bytes; the answer's status, headers (lower-case) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(lines[0].split(" ")[1]), headers, body


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection without a byte of answer (a close with our
    request unread may arrive as a reset)."""
    try:
        async with asyncio.timeout(5):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: gw\r\nUser-Agent: test\r\n\r\n".encode()


def promtool(text: str) -> tuple[int, list[str]]:
    """``promtool check metrics`` on ``text``: its exit code and its problem lines."""
    tool = shutil.which("promtool")
    assert tool is not None, "promtool missing: run ./scripts/bootstrap.sh test (apt prometheus)"
    done = subprocess.run(
        [tool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines() if line]


def only_legacy_units_flagged(text: str) -> None:
    """promtool finds nothing but the kept non-base-unit names (each has a base-unit twin)."""
    code, problems = promtool(text)
    unexpected = [p for p in problems if p.split(" ", 1)[0] not in LEGACY_NON_BASE_UNITS]
    assert unexpected == []
    assert all("use base unit" in problem for problem in problems)
    assert code == (3 if problems else 0)  # 3: lint problems only, never a parse error


# --- the exposition ---------------------------------------------------------------------------


async def test_promtool_accepts_the_whole_exposition_but_the_kept_legacy_names() -> None:
    text = render_prometheus(FULL_STATUS, await asyncio.to_thread(process_figures))
    assert "edge_gateway_certificate_days_left 41.5" in text  # kept, not renamed
    only_legacy_units_flagged(text)


async def test_promtool_rejects_what_breaks_the_format() -> None:
    """The check can fail: a sample without HELP/TYPE of the right kind is caught."""
    text = render_prometheus(FULL_STATUS).replace("# TYPE edge_gateway_info gauge", "")
    broken = text + "edge_gateway_info_total{ 1\n"
    code, problems = promtool(broken)
    assert code != 0 and problems


def test_base_unit_twins_stand_beside_the_older_names() -> None:
    samples = dict(
        line.rsplit(" ", 1)
        for line in render_prometheus(FULL_STATUS).splitlines()
        if line[0] != "#"
    )
    assert samples["edge_gateway_certificate_expiry_timestamp_seconds"] == "1798999999.0"
    assert samples["edge_gateway_last_checkin_timestamp_seconds"] == "1795435200.0"
    assert samples["edge_gateway_certificate_days_left"] == "41.5"


def test_outbox_dropped_and_in_memory_figures_are_exported() -> None:
    status = {**FULL_STATUS, "outbox_in_memory": True, "outbox_in_memory_entries": 4}
    text = render_prometheus(status)
    assert "# TYPE edge_gateway_outbox_dropped_events_total counter" in text
    assert "\nedge_gateway_outbox_dropped_events_total 2\n" in text
    assert "\nedge_gateway_outbox_in_memory 1\n" in text
    assert "\nedge_gateway_outbox_in_memory_entries 4\n" in text


def test_ota_state_is_one_sample_per_phase_with_the_current_one_set() -> None:
    assert set(OTA_STATES) == set(OtaPhase.__args__)  # type: ignore[attr-defined]
    lines = render_prometheus(FULL_STATUS).splitlines()
    states = {
        re.search(r'state="(\w+)"', line).group(1): line.rsplit(" ", 1)[1]  # type: ignore[union-attr]
        for line in lines
        if line.startswith("edge_gateway_ota_state{")
    }
    assert states.keys() == set(OTA_STATES)
    assert [name for name, value in states.items() if value == "1"] == ["downloading"]


def test_process_figures_are_this_processs() -> None:
    figures = process_figures()
    vm_rss = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert vm_rss is not None
    assert figures["resident_bytes"] == pytest.approx(int(vm_rss.group(1)) * 1024, rel=0.2)
    assert time.time() - 24 * 3600 < figures["start_time"] < time.time()
    with open(os.devnull, "rb"):
        assert process_figures()["open_fds"] == figures["open_fds"] + 1
    cpu = figures["cpu_seconds"]
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert process_figures()["cpu_seconds"] > cpu


# --- the server --------------------------------------------------------------------------------


async def test_metrics_are_served_with_the_exposition_content_type() -> None:
    async with serving(FULL_STATUS) as port:
        status, headers, body = await exchange(port, get("/metrics?debug=1"))
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    assert b"\nedge_gateway_mqtt_connected 1\n" in body
    assert b"\nprocess_resident_memory_bytes " in body


async def test_head_answers_the_headers_without_the_body() -> None:
    async with serving(FULL_STATUS) as port:
        status, headers, body = await exchange(port, get("/metrics", "HEAD"))
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""


@pytest.mark.parametrize(("healthy", "code"), [(True, 200), (False, 503)])
async def test_healthz_answers_by_health(healthy: bool, code: int) -> None:
    async with serving({**FULL_STATUS, "healthy": healthy}) as port:
        status, headers, body = await exchange(port, get("/healthz"))
    assert status == code and headers["content-type"] == "application/json"
    assert json.loads(body) == {"healthy": healthy, "connected": True, "synced": True}


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (get("/"), 404),
        (get("/metrics/../admin"), 404),
        (get("/metrics", "POST"), 405),
        (get("/healthz", "DELETE"), 405),
        (b"\x16\x03\x01 hello tls\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
    ],
)
async def test_other_requests_are_refused_by_status(request_bytes: bytes, code: int) -> None:
    async with serving(FULL_STATUS) as port:
        status, headers, _ = await exchange(port, request_bytes)
    assert status == code
    if code == 405:
        assert headers["allow"] == "GET, HEAD"


async def test_a_request_head_over_the_bound_is_closed_unanswered() -> None:
    huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * metrics.MAX_REQUEST_BYTES + b"\r\n\r\n"
    async with serving(FULL_STATUS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(huge)
        assert await closed_unanswered(reader)
        writer.close()


async def test_a_silent_client_is_dropped_after_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "READ_TIMEOUT_S", 0.3)
    async with serving(FULL_STATUS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        assert time.monotonic() - started < 3
        writer.close()


async def test_clients_beyond_the_bound_are_closed_and_the_rest_still_served() -> None:
    async with serving(FULL_STATUS) as port:
        idle = [
            await asyncio.open_connection("127.0.0.1", port) for _ in range(metrics.MAX_CLIENTS)
        ]
        await asyncio.sleep(0.1)  # the server has taken them all
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/metrics"))
        assert await closed_unanswered(reader)  # one too many
        writer.close()
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
        status, _, body = await exchange(port, get("/metrics"))
    assert status == 200 and b"edge_gateway_info" in body


async def test_stopping_the_server_ends_its_open_connections() -> None:
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve_metrics("127.0.0.1", port, lambda: FULL_STATUS, ready))
    await asyncio.wait_for(ready.wait(), 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    async with asyncio.timeout(2):  # well before the 5 s read timeout
        assert await reader.read() == b""
    writer.close()


async def test_a_port_in_use_is_logged_and_the_gateway_goes_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with capture_logs() as logs:
            await asyncio.wait_for(serve_metrics("127.0.0.1", port, lambda: FULL_STATUS), 5)
    assert [entry["event"] for entry in logs] == ["metrics_unavailable"]


# --- the daemon with metrics and check-in configured -------------------------------------------


def imported_modules(importtime: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    names = set()
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


async def scrape(port: int) -> str:
    _, _, body = await exchange(port, get("/metrics"))
    return body.decode()


@pytest.mark.integration
async def test_daemon_with_metrics_and_checkin_serves_promtool_clean_metrics_without_aiohttp(
    tmp_path: Path,
) -> None:
    async with running_devcloud(tmp_path / "cloud") as cloud:
        (thing,) = await cloud.create_things(1, prefix="metrics")
        config = configure(thing.folder, cloud)
        port = free_port()
        config.write_text(config.read_text() + f"metrics: {{listen: '127.0.0.1:{port}'}}\n")
        stderr = tmp_path / "importtime.txt"
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "gateway",
                "run",
                "--mock-gpio",
                "-c",
                str(config),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            text = ""
            async with asyncio.timeout(20):
                while not ("last_checkin_timestamp" in text and "shadow_synced 1" in text):
                    await asyncio.sleep(0.2)
                    try:
                        text = await scrape(port)
                    except (OSError, ValueError, IndexError):
                        text = ""  # not listening yet
            assert cloud.provision.checkin_count >= 1
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 10)
    only_legacy_units_flagged(text)
    assert "\nedge_gateway_shadow_synced 1\n" in text
    modules = imported_modules(stderr.read_text())
    assert "gateway.updates.http" in modules  # the check-in client was loaded ...
    assert "gateway.ops.metrics" in modules  # ... and the metrics server
    heavy = {m for m in modules if m.split(".")[0] in ("aiohttp", "prometheus_client")}
    assert heavy == set()
    assert not {m for m in modules if m.startswith("gateway.devcloud")}
