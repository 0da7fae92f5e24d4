"""What the daemon and the light commands load, and what an idle daemon costs: ``edge-gateway
run`` with the example config's devices in its own process (mock GPIO, the test broker and shadow
service), under ``python -X importtime``, whose report on stderr names every module imported."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bench.footprint import IdleSample, ImportReport
from gateway.devcloud import MosquittoBroker, ShadowService
from gateway.ops.adminclient import request
from tests.integration.harness import write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("cryptography", "aiohttp", "gateway.devcloud", "pydantic")
# The light commands also stay clear of asyncio (the 25 MB budget).
HEAVY_FOR_LIGHT_COMMANDS = (*HEAVY, "asyncio")


def example_devices() -> str:
    devices = yaml.safe_load((ROOT / "config" / "gateway.example.yaml").read_text())["devices"]
    return "".join(f"  {name}: {json.dumps(spec)}\n" for name, spec in devices.items())


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    config: Path
    socket: Path
    stderr: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def imports(self) -> ImportReport:
        return ImportReport.parse(self.stderr.read_text(errors="replace"))


async def synced(daemon: Daemon, timeout: float = 30) -> None:
    """Until the daemon's admin socket says connected and synced (bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            if daemon.process.poll() is not None:
                pytest.fail(f"the daemon exited: {daemon.stderr.read_text()[-2000:]}")
            if daemon.socket.exists():
                status = await asyncio.to_thread(request, daemon.socket, {"cmd": "status"})
                if status.get("connected") and status.get("synced"):
                    return
            await asyncio.sleep(0.1)


def start_daemon(config: Path, folder: Path) -> Daemon:
    """``edge-gateway run -c config --mock-gpio`` under ``-X importtime`` (stderr to a file)."""
    stderr = folder / "stderr.txt"
    with stderr.open("wb") as errors, (folder / "stdout.txt").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "gateway", "run", "-c", str(config),
             "--mock-gpio"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=errors,
        )  # fmt: skip
    return Daemon(process, config, folder / "admin.sock", stderr)


@pytest.fixture
async def daemon(
    broker: MosquittoBroker, shadow_service: ShadowService, tmp_path: Path, thing: str
) -> AsyncIterator[Daemon]:
    """``edge-gateway run`` on the example devices, synced."""
    config = write_config(tmp_path, broker, thing, devices=example_devices(), keepalive_s=60)
    running = start_daemon(config, tmp_path)
    try:
        await synced(running)
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def test_run_with_the_example_config_loads_no_heavy_package(daemon: Daemon) -> None:
    assert await asyncio.to_thread(daemon.stop) == 0
    report = daemon.imports()
    assert "gateway.app" in report.modules  # the report was read: the daemon's own modules
    assert report.heavy() == []


async def test_an_idle_daemon_wakes_at_most_once_a_second(daemon: Daemon) -> None:
    await asyncio.sleep(1)  # the start's last messages settle
    before = IdleSample.take(daemon.process.pid)
    await asyncio.sleep(5)
    idle = before.until(IdleSample.take(daemon.process.pid))
    assert idle["wakeups_per_s"] <= 1.0, idle


async def light_command_imports(daemon: Daemon, cwd: Path) -> dict[str, ImportReport]:
    """Each light command run under ``-X importtime`` against ``daemon``: what it imported."""
    commands = {
        "--version": ["--version"],
        "status": ["status", "--socket", str(daemon.socket), "--json"],
        "mock set": ["mock", "set", "button", "true", "--socket", str(daemon.socket)],
        "ota guard": ["ota", "guard", "-c", str(daemon.config)],
    }
    reports = {}
    for name, args in commands.items():
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-X", "importtime", "-m", "gateway", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, (name, run.stdout, run.stderr[-2000:])
        reports[name] = ImportReport.parse(run.stderr)
        assert "gateway.cli.main" in reports[name].modules, name  # the report was read
    return reports


def loaded(report: ImportReport, roots: tuple[str, ...]) -> list[str]:
    return [r for r in roots if any(m == r or m.startswith(r + ".") for m in report.modules)]


async def test_the_light_commands_load_no_heavy_package(daemon: Daemon, tmp_path: Path) -> None:
    for name, report in (await light_command_imports(daemon, tmp_path)).items():
        assert loaded(report, HEAVY_FOR_LIGHT_COMMANDS) == [], name


async def test_a_light_command_builds_only_its_own_parser(daemon: Daemon, tmp_path: Path) -> None:
    # The modules that register the other commands' parsers (main builds the command's alone);
    # and without OTA in wheel mode the guard needs no update state, file helpers or dataclasses.
    others = ("gateway.cli.certs", "gateway.cli.configcmd", "gateway.cli.credentials",
              "gateway.cli.importbatch", "gateway.cli.mindconnect", "gateway.cli.completion",
              "gateway.resources")  # fmt: skip
    reports = await light_command_imports(daemon, tmp_path)
    for name, report in reports.items():
        assert loaded(report, others) == [], name
    guard = ("dataclasses", "gateway.updates.otastate", "gateway.core.atomicfile")
    assert loaded(reports["ota guard"], guard) == []


async def test_check_config_loads_no_heavy_package_nor_the_daemons_runtime(
    daemon: Daemon, tmp_path: Path
) -> None:
    """check-config makes run's checks (the pair, the files) with none of what runs them."""
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-X", "importtime", "-m", "gateway", "check-config", "-c",
         str(daemon.config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout, run.stderr[-2000:])
    report = ImportReport.parse(run.stderr)
    assert "gateway.provisioning.pairhealth" in report.modules  # the pair was checked
    assert loaded(report, (*HEAVY, "asyncio", "structlog")) == []
