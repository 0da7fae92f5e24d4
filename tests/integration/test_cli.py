"""The command line as users run it: real processes, real broker, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService
from tests.integration.harness import write_config

pytestmark = pytest.mark.integration
GATEWAY = [sys.executable, "-m", "gateway"]


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    "command", [[], ["run"], ["check-config"], ["status"], ["mock", "set"], ["demo"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: edge-gateway" in result.stdout


def test_usage_error_exits_2() -> None:
    assert cli("run").returncode == 2  # -c is required


def test_check_config_exits_0_on_a_valid_config(broker: MosquittoBroker, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, "pi-check")
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_exits_2_and_prints_file_line_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "thing: pi\nmqtt: {host: h, ca: a, cert: b, key: c}\ndevices:\n  led: {type: LED}\n"
    )
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:4:3: devices.led.pin: required key is missing" in result.stderr
    assert f"{path}:2:" in result.stderr and "mqtt.ca: file" in result.stderr


def test_run_with_a_bad_config_exits_2_before_touching_any_pin(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    socket = tmp_path / "admin.sock"
    path.write_text(
        f"thing: pi\nadmin_socket: {socket}\nmqtt: {{host: h, ca: a, cert: b, key: c}}\n"
        "devices:\n  led: {type: LED, pin: 17, colour: red}\n"
    )
    result = cli("run", "-c", str(path), "--mock-gpio")
    assert result.returncode == 2
    assert "devices.led.colour: unknown key" in result.stderr
    assert "gpio_devices_opened" not in result.stdout + result.stderr
    assert not socket.exists()


def test_status_without_a_daemon_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    result = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    assert "no gateway is running" in result.stderr


async def _wait_for_socket(path: Path, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(15):
        while not path.exists():
            if process.returncode is not None:
                raise AssertionError(f"gateway exited early with {process.returncode}")
            await asyncio.sleep(0.05)


async def _cli_async(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *GATEWAY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_daemon_status_mock_press_and_sigterm_with_final_state_reported(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    tmp_path: Path,
) -> None:
    thing = f"pi-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, broker, thing)
    socket = tmp_path / "admin.sock"
    log_file = (tmp_path / "gateway.log").open("w")
    process = await asyncio.create_subprocess_exec(
        *GATEWAY, "run", "-c", str(config), "--mock-gpio", stdout=log_file, stderr=log_file
    )
    try:
        await _wait_for_socket(socket, process)
        await shadow_client.wait_for(
            thing, lambda doc: "led" in doc["state"].get("reported", {}), timeout=10
        )
        assert socket.stat().st_mode & 0o777 == 0o660  # the service user and its group only
        code, out, _ = await _cli_async("status", "--socket", str(socket), "--json")
        status: dict[str, Any] = json.loads(out)
        assert code == 0
        assert status["connected"] is True and status["thing"] == thing
        assert status["devices"]["button"] is False

        code, _, err = await _cli_async("mock", "set", "button", "true", "--socket", str(socket))
        assert code == 0, err
        await shadow_client.wait_for(
            thing, lambda doc: doc["state"]["reported"].get("button") is True, timeout=5
        )
        code, _, err = await _cli_async("mock", "set", "led", "true", "--socket", str(socket))
        assert code == 1 and "set it through the shadow" in err

        await shadow_client.update(thing, {"desired": {"led": True}})
        await shadow_client.wait_for(
            thing, lambda doc: doc["state"]["reported"].get("led") is True, timeout=5
        )
        before = await shadow_client.get(thing)
        assert before is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            code = await process.wait()
        assert code == 0
        assert time.monotonic() - started < 5
        after = await shadow_client.get(thing)
        assert after is not None
        assert after["version"] > before["version"]  # the final state was reported on the way out
        assert after["state"]["reported"]["button"] is True
        assert not socket.exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log_file.close()
    logs = [json.loads(line) for line in (tmp_path / "gateway.log").read_text().splitlines()]
    events = [entry["event"] for entry in logs]
    assert "final_state_reported" in events and "gateway_stopped" in events
    assert all(entry.get("thing") == thing for entry in logs if entry["event"] == "desired_applied")


def test_json_logs_when_not_on_a_terminal(tmp_path: Path) -> None:
    # check-config prints to stdout, so use run with a config whose broker is unreachable and
    # read the first log line; it must be one JSON object with snake_case event and thing bound.
    path = tmp_path / "gw.yaml"
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text("not a certificate")
    path.write_text(
        f"thing: pi-json\nstate_dir: {tmp_path}\nadmin_socket: {tmp_path / 'a.sock'}\n"
        "mqtt: {host: 127.0.0.1, port: 1, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
        "gpio: {pin_factory: mock}\ndevices:\n  led: {type: LED, pin: 17}\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [*GATEWAY, "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    # Certificates that cannot be loaded are a runtime failure: exit 1 with the file named.
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and all(line["thing"] == "pi-json" for line in lines)
    failures = [line["error"] for line in lines if line["event"] == "gateway_failed"]
    assert failures and any(name in failures[0] for name in ("ca.pem", "cert.pem", "key.pem"))
    assert not any(line["event"] == "gpio_devices_opened" for line in lines)  # failed before pins
    assert "not a certificate" not in result.stdout + result.stderr
