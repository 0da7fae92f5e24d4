"""The gateway as a systemd service: the unit (systemd-analyze verify and security), sd_notify
on a real NOTIFY_SOCKET (READY, STATUS, WATCHDOG cadence, STOPPING, a blocked loop), SIGHUP
reloads, and the metrics endpoint. Gateways run as subprocesses (``python -m gateway run``)
against the session's mosquitto and dev cloud, as systemd would run them."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService
from gateway.exitcodes import EXIT_RESTART_FOR_UPDATE
from gateway.ops.admin import request
from gateway.paths import default_admin_socket, default_config_path, default_state_dir
from tests.integration.harness import reported, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-gateway.service"
EXEC_START = "/opt/edge-gateway/current/bin/edge-gateway run -c /etc/edge-gateway/gateway.yaml"
# The OTA start guard, run from the previous A/B slot (absent until the first update).
GUARD = "/opt/edge-gateway/previous/bin/edge-gateway ota guard -c /etc/edge-gateway/gateway.yaml"
MAX_EXPOSURE = 2.5  # systemd-analyze's "OK" band ends here

# --- the unit --------------------------------------------------------------------------------


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/bootstrap.sh)")
    return path


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify needs ExecStart's binary to exist, and /opt/edge-gateway exists only on a Pi
    after install: the copy verified differs from the unit in those two lines only (ExecStart and
    the OTA guard's ExecStartPre)."""
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START}\n" in text
    copy = tmp_path / "edge-gateway.service"
    assert f"ExecStartPre=-{GUARD}\n" in text
    copy.write_text(
        text.replace(EXEC_START, f"{sys.executable} -m gateway run -c /dev/null").replace(
            GUARD, f"{sys.executable} -m gateway ota guard -c /dev/null"
        )
    )
    assert len(set(copy.read_text().splitlines()) ^ set(text.splitlines())) == 4
    result = subprocess.run(
        [systemd_analyze(), "verify", str(copy)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [line for line in result.stderr.splitlines() if "edge-gateway" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


def test_unit_security_exposure_is_ok() -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(
        r"Overall exposure level for edge-gateway\.service: ([0-9.]+) (\w+)", result.stdout
    )
    assert match is not None, result.stdout + result.stderr
    print(f"\nsystemd-analyze security: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= MAX_EXPOSURE
    assert match.group(2) in ("OK", "SAFE")


def test_unit_keeps_the_gpio_reachable_behind_the_hardening() -> None:
    settings = unit_settings()
    assert settings["DevicePolicy"] == ["closed"]
    assert "char-gpiochip rw" in settings["DeviceAllow"]  # lgpio (every Pi, the Pi 5 too)
    assert "char-bcm2835-gpiomem rw" in settings["DeviceAllow"]  # RPi.GPIO
    assert "char-spidev rw" in settings["DeviceAllow"]  # MCP3008
    assert "gpio" in settings["SupplementaryGroups"][0].split()
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["CapabilityBoundingSet"] == [""]


def test_unit_is_a_notify_service_with_watchdog_and_update_restart() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30"]
    assert settings["Restart"] == ["on-failure"]
    assert str(EXIT_RESTART_FOR_UPDATE) in settings["RestartForceExitStatus"][0].split()
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_unit_directories_are_the_config_defaults() -> None:
    settings = unit_settings()
    state = Path("/var/lib") / settings["StateDirectory"][0]
    runtime = Path("/run") / settings["RuntimeDirectory"][0]
    configuration = Path("/etc") / settings["ConfigurationDirectory"][0]
    # Under the unit systemd passes its directories, and the defaults follow them (any user).
    unit_env = {
        "STATE_DIRECTORY": str(state),
        "RUNTIME_DIRECTORY": str(runtime),
        "CONFIGURATION_DIRECTORY": str(configuration),
    }
    assert default_state_dir(unit_env, euid=999) == state
    assert default_admin_socket(unit_env, euid=999).parent == runtime
    assert default_config_path(unit_env) == Path(EXEC_START.rsplit(maxsplit=1)[-1])
    # root without the unit: the same folders.
    assert default_state_dir({}, euid=0) == state
    assert default_admin_socket({}, euid=0).parent == runtime


# --- sd_notify from a running gateway ----------------------------------------------------------


@dataclass
class NotifyCollector:
    """A bound NOTIFY_SOCKET; a thread records every datagram with its arrival time."""

    path: Path
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.path))
        self._socket.settimeout(0.05)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._socket.close()

    def times(self, key: str) -> list[float]:
        return [at for at, fields in list(self.messages) if key in fields]

    async def wait_for(
        self, key: str, *, after: float = 0.0, timeout: float = 15.0
    ) -> tuple[float, dict[str, str]]:
        async with asyncio.timeout(timeout):
            while True:
                for at, fields in list(self.messages):
                    if key in fields and at > after:
                        return at, fields
                await asyncio.sleep(0.02)


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    notify: NotifyCollector
    config_path: Path
    log_path: Path
    admin_socket: Path

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def count(self, event: str) -> int:
        return sum(1 for entry in self.events() if entry.get("event") == event)

    async def until_logged(self, event: str, count: int = 1, timeout: float = 10.0) -> None:
        await _until(lambda: self.count(event) >= count, timeout)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(request, self.admin_socket, {"cmd": "status"})


# Runs the real CLI, plus a SIGUSR1 handler that blocks the event loop for argv[1] seconds.
BLOCKING_DRIVER = """
import asyncio, signal, sys, time
import gateway.app as app
original = app.run_gateway
async def run(*args, **kwargs):
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, time.sleep, float(sys.argv[1]))
    await original(*args, **kwargs)
app.run_gateway = run
from gateway.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def spawn(broker: MosquittoBroker, tmp_path: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(
        *, watchdog_usec: int = 1_000_000, block_s: float | None = None, **options: Any
    ) -> AsyncIterator[GatewayProcess]:
        thing = f"pi-{uuid.uuid4().hex[:8]}"
        config_path = write_config(tmp_path, broker, thing, **options)
        notify = NotifyCollector(tmp_path / "notify")
        log_path = tmp_path / "gateway.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)}
        env.pop("WATCHDOG_PID", None)
        cli = ["run", "-c", str(config_path), "--mock-gpio"]
        if block_s is None:
            argv = [sys.executable, "-m", "gateway", *cli]
        else:
            argv = [sys.executable, "-c", BLOCKING_DRIVER, str(block_s), *cli]
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        running = GatewayProcess(process, notify, config_path, log_path, tmp_path / "admin.sock")
        try:
            yield running
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            notify.close()

    return start


async def test_ready_comes_after_the_devices_and_the_first_connection(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn() as gateway:
        _, ready = await gateway.notify.wait_for("READY")
        assert ready["READY"] == "1"
        assert "4 devices" in ready["STATUS"]
        events = [entry["event"] for entry in gateway.events()]
        assert events.index("gpio_devices_opened") < events.index("service_ready")
        assert events.index("mqtt_connected") < events.index("service_ready")


async def test_status_line_reports_the_synced_shadow(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn() as gateway:
        await _until(
            lambda: any(
                "shadow synced" in fields.get("STATUS", "") for _, fields in gateway.notify.messages
            )
        )
        status = [f["STATUS"] for _, f in gateway.notify.messages if "STATUS" in f]
        assert all("\n" not in line for line in status)


async def test_watchdog_pings_every_half_watchdog_usec(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn(watchdog_usec=1_000_000) as gateway:
        ready_at, _ = await gateway.notify.wait_for("READY")
        await _until(
            lambda: len([t for t in gateway.notify.times("WATCHDOG") if t > ready_at]) >= 6
        )
        pings = [t for t in gateway.notify.times("WATCHDOG") if t > ready_at]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.4 <= statistics.median(gaps) <= 0.65
        assert max(gaps) < 1.0  # never near WATCHDOG_USEC itself


async def test_sigterm_sends_stopping_and_exits_cleanly(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn() as gateway:
        await gateway.notify.wait_for("READY")
        sent = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        await gateway.notify.wait_for("STOPPING", after=sent, timeout=5)
        assert await asyncio.wait_for(gateway.process.wait(), timeout=10) == 0


async def test_a_blocked_event_loop_stops_the_watchdog_pings(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn(watchdog_usec=400_000, block_s=2.0) as gateway:
        ready_at, _ = await gateway.notify.wait_for("READY")
        await _until(
            lambda: len([t for t in gateway.notify.times("WATCHDOG") if t > ready_at]) >= 3
        )
        blocked_at = time.monotonic()
        gateway.process.send_signal(signal.SIGUSR1)  # the loop sleeps 2 s in a callback
        await asyncio.sleep(3.0)
        pings = gateway.notify.times("WATCHDOG")
        during = [t for t in pings if blocked_at + 0.3 < t < blocked_at + 1.9]
        assert during == []
        assert any(t > blocked_at + 2.0 for t in pings)  # pings resume once the loop does
        await gateway.until_logged("event_loop_stalled")


# --- SIGHUP ---------------------------------------------------------------------------------

DEVICES_PLUS_BUZZER = """\
  led:    {type: LED, pin: 17}
  relay:  {type: OutputDevice, pin: 27, active_high: false}
  fan:    {type: PWMLED, pin: 18}
  button: {type: Button, pin: 4, pull_up: true}
  buzzer: {type: Buzzer, pin: 22}
"""


async def _reload(gateway: GatewayProcess) -> None:
    sent = time.monotonic()
    gateway.process.send_signal(signal.SIGHUP)
    reloading_at, _ = await gateway.notify.wait_for("RELOADING", after=sent)
    await gateway.notify.wait_for("READY", after=reloading_at)


async def test_sighup_with_new_devices_recreates_them_and_keeps_the_connection(
    shadow_service: ShadowService, shadow_client: ShadowClient, spawn: Any
) -> None:
    async with spawn() as gateway:
        await gateway.notify.wait_for("READY")
        thing = (await gateway.status())["thing"]
        await shadow_client.update(thing, {"desired": {"led": True}})
        await shadow_client.wait_for(thing, reported("led", True), timeout=5)
        text = gateway.config_path.read_text()
        gateway.config_path.write_text(
            text.split("devices:\n")[0] + "devices:\n" + DEVICES_PLUS_BUZZER
        )
        await _reload(gateway)
        doc = await shadow_client.wait_for(thing, reported("buzzer", False), timeout=5)
        assert doc["state"]["reported"]["led"] is True  # unchanged output kept its value
        status = await gateway.status()
        assert status["devices"]["led"] is True and "buzzer" in status["devices"]
        assert status["reloads_applied"] == 1
        assert gateway.count("mqtt_connected") == 1


async def test_sighup_with_new_mqtt_settings_reconnects(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn() as gateway:
        await gateway.notify.wait_for("READY")
        await gateway.until_logged("mqtt_connected")
        text = gateway.config_path.read_text()
        gateway.config_path.write_text(text.replace("keepalive_s: 30", "keepalive_s: 45"))
        await _reload(gateway)
        await gateway.until_logged("mqtt_connected", count=2)
        assert (await gateway.status())["reloads_applied"] == 1


async def test_sighup_with_a_bad_config_keeps_the_running_one(
    shadow_service: ShadowService, spawn: Any
) -> None:
    async with spawn() as gateway:
        await gateway.notify.wait_for("READY")
        good = gateway.config_path.read_text()
        gateway.config_path.write_text(good.replace("{type: LED, pin: 17}", "{type: LED, pin: 99}"))
        await _reload(gateway)
        await gateway.until_logged("config_reload_rejected")
        rejected = next(e for e in gateway.events() if e["event"] == "config_reload_rejected")
        assert re.search(
            r"gateway\.yaml:\d+:\d+: devices\.led\.pin: GPIO99", rejected["problems"][0]
        )
        status = await gateway.status()
        assert set(status["devices"]) == {"led", "relay", "fan", "button"}
        assert status["reloads_rejected"] == 1 and status["healthy"] is True
        assert gateway.process.returncode is None


# --- metrics --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_metrics_and_healthz_serve_the_status_figures(
    shadow_service: ShadowService, spawn: Any
) -> None:
    import aiohttp

    port = _free_port()
    async with spawn(extra=f"metrics: {{listen: '127.0.0.1:{port}'}}\n") as gateway:
        await gateway.notify.wait_for("READY")
        await _until(
            lambda: any("shadow synced" in f.get("STATUS", "") for _, f in gateway.notify.messages)
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["healthy"] is True
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        assert values["edge_gateway_mqtt_connected"] == "1"
        assert values["edge_gateway_mqtt_reconnects_total"] == "0"
        assert float(values["edge_gateway_certificate_days_left"]) > 1
        status = await gateway.status()
        assert status["certificate_days_left"] == pytest.approx(
            float(values["edge_gateway_certificate_days_left"]), abs=0.01
        )


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
