"""Check-in and OTA end to end: the dev cloud (mosquitto, shadow service, HTTPS Provision API
with artifact hosting and injected faults), a mock-GPIO gateway in-process, real files, real
signatures. The ``wheel`` scenarios build real wheels, install them into real A/B virtualenv
slots and restart the gateway as a subprocess from the ``current`` link, as systemd would."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway import __version__
from gateway.app import Gateway
from gateway.config import load_config
from gateway.devcloud import ShadowClient
from gateway.devcloud.web import DevCloud
from gateway.exitcodes import EXIT_RESTART_FOR_UPDATE
from gateway.updates.signing import build_bundle, bundle_name, generate_keypair, sign_release
from tests.integration.harness import running_config
from tests.integration.test_devcloud_web import running_devcloud

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = bytes(range(256)) * 800  # 200 KiB, so a cut link really cuts it


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


@pytest.fixture
async def shadows(cloud: DevCloud) -> AsyncIterator[ShadowClient]:
    broker = cloud.broker
    creds = broker.credentials(broker.admin_identities[0])
    async with ShadowClient(broker.host, broker.port, creds) as client:
        yield client


@pytest.fixture
async def thing_dir(cloud: DevCloud) -> Path:
    (thing,) = await cloud.create_things(1, prefix="ota")
    return thing.folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    generate_keypair(private, public)
    return private, public


def configure(folder: Path, cloud: DevCloud, *, ota: str = "", checkin: str = "") -> Path:
    """The batch thing's config plus check-in (every second, fast retries) and ``ota``."""
    path = folder / "gateway.yaml"
    base = path.read_text().split("checkin:")[0]
    path.write_text(
        base
        + f"""\
checkin:
  url: {cloud.provision_url}provision/checkin
  product_id: gw
  ca: {folder / "ca.pem"}
  client_cert: true
  interval_s: 1
  timeout_s: 2
  retry: {{min_s: 0.2, max_s: 1}}
{checkin}{ota}"""
    )
    return path


def offer(cloud: DevCloud, name: str, data: bytes, version: str, **extra: Any) -> None:
    (cloud.provision.artifacts_dir / name).write_bytes(data)
    offers = {"gw": {"version": version, "url": f"/artifacts/{name}", **extra}}
    (cloud.state_dir / "provision" / "offers.json").write_text(json.dumps(offers))


@asynccontextmanager
async def gateway_running(config_path: Path) -> AsyncIterator[Gateway]:
    config = load_config(config_path)
    async with running_config(config, config.state_dir / "mock") as running:
        yield running.gateway


def ota_is(state: str, version: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(doc: dict[str, Any]) -> bool:
        ota = doc.get("state", {}).get("reported", {}).get("gateway", {}).get("ota") or {}
        return ota.get("state") == state and (version is None or ota.get("version") == version)

    return check


def reported_ota(doc: dict[str, Any]) -> dict[str, Any]:
    ota: dict[str, Any] = doc["state"]["reported"]["gateway"]["ota"]
    return ota


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def command_ota(folder: Path, public_key: Path | None = None) -> str:
    """``command`` mode: a script that copies the artifact to flashed.bin (an MCU flasher)."""
    script = folder / "flash.py"
    script.write_text(
        "import shutil, sys\nshutil.copyfile(sys.argv[1], sys.argv[2])\nprint('flashed')\n"
    )
    key = f"  public_key: {public_key}\n" if public_key else ""
    return f"""\
ota:
  mode: command
  command: [{sys.executable}, {script}, "{{artifact}}", {folder / "flashed.bin"}]
  command_timeout_s: 30
{key}"""


def kept_artifacts(folder: Path) -> list[Path]:
    ota = folder / "state" / "ota"
    return [p for p in ota.rglob("*") if p.is_file() and p.name != "state.json"]


# --- check-in ---------------------------------------------------------------------------------


async def test_up_to_date_checkin_changes_nothing(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path
) -> None:
    config = configure(thing_dir, cloud, checkin="  extra: {hw: rev2}\n")
    with capture_logs() as logs:
        async with gateway_running(config) as gateway:
            await until(lambda: cloud.provision.checkin_count >= 2)
            assert gateway.status()["last_checkin"] is not None
            assert gateway.updater.status["state"] == "idle"
    record = cloud.provision.checkins[gateway.config.thing]
    assert record["version"] == __version__ and record["productId"] == "gw"
    assert record["offer"] == {}
    assert any(e["event"] == "checkin_up_to_date" for e in logs)
    assert not any(e["event"].startswith("ota_") and e["event"] != "ota_state" for e in logs)


async def test_update_is_applied_by_the_command_and_reported(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    offer(cloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")
    artifact = cloud.provision.artifacts_dir / "fw-2.0.bin"
    # The release's signed manifest next to it (fw-2.0.bin.manifest and .manifest.sig).
    sign_release(private.read_bytes(), artifact, product="gw", version="fw-2.0")
    config = configure(thing_dir, cloud, ota=command_ota(thing_dir, public))
    async with gateway_running(config) as gateway:
        doc = await shadows.wait_for(gateway.config.thing, ota_is("applied", "fw-2.0"), 20)
        assert reported_ota(doc).get("error") is None  # null removes it from the shadow
        assert (thing_dir / "flashed.bin").read_bytes() == FIRMWARE
        # The next check-in says the applied version runs: nothing is offered any more.
        await until(lambda: cloud.provision.checkins[gateway.config.thing]["version"] == "fw-2.0")
    state = json.loads((thing_dir / "state" / "ota" / "state.json").read_text())
    assert state["installed"]["version"] == "fw-2.0"
    assert kept_artifacts(thing_dir) == []
    assert sum(1 for name, _ in cloud.provision.artifact_requests if name == "fw-2.0.bin") == 1


async def test_checksum_mismatch_deletes_the_artifact_and_never_applies_it(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path
) -> None:
    offer(cloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")
    cloud.provision.misbehaviour.wrong_checksum = True
    config = configure(thing_dir, cloud, ota=command_ota(thing_dir))
    async with gateway_running(config) as gateway:
        doc = await shadows.wait_for(gateway.config.thing, ota_is("failed", "fw-2.0"), 20)
    assert "SHA-256" in reported_ota(doc)["error"]
    assert not (thing_dir / "flashed.bin").exists()
    assert kept_artifacts(thing_dir) == []


async def test_bad_signature_deletes_the_artifact_and_never_applies_it(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    offer(cloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")
    cloud.provision.signing_key = private.read_bytes()  # the manifest in the answer
    cloud.provision.misbehaviour.bad_signature = True
    config = configure(thing_dir, cloud, ota=command_ota(thing_dir, public))
    async with gateway_running(config) as gateway:
        doc = await shadows.wait_for(gateway.config.thing, ota_is("failed", "fw-2.0"), 20)
    assert "signature does not verify" in reported_ota(doc)["error"]
    assert not (thing_dir / "flashed.bin").exists()
    assert kept_artifacts(thing_dir) == []


async def test_unsigned_artifact_is_refused_when_a_public_key_is_set(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path, keys: tuple[Path, Path]
) -> None:
    offer(cloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")  # no signed manifest next to it
    config = configure(thing_dir, cloud, ota=command_ota(thing_dir, keys[1]))
    async with gateway_running(config) as gateway:
        await shadows.wait_for(gateway.config.thing, ota_is("failed", "fw-2.0"), 20)
    assert not (thing_dir / "flashed.bin").exists()
    assert kept_artifacts(thing_dir) == []


async def test_a_cut_download_resumes_with_a_range_request(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path
) -> None:
    offer(cloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")
    cloud.provision.misbehaviour.truncate_at = len(FIRMWARE) // 2
    config = configure(thing_dir, cloud, ota=command_ota(thing_dir))
    with capture_logs() as logs:
        async with gateway_running(config) as gateway:
            await shadows.wait_for(gateway.config.thing, ota_is("applied", "fw-2.0"), 20)
    assert (thing_dir / "flashed.bin").read_bytes() == FIRMWARE
    requests = [rng for name, rng in cloud.provision.artifact_requests if name == "fw-2.0.bin"]
    assert requests[0] is None and len(requests) == 2
    match = re.fullmatch(r"bytes=(\d+)-", requests[1] or "")
    assert match and 0 < int(match.group(1)) <= len(FIRMWARE) // 2
    assert any(e["event"] == "checkin_failed" and "fw-2.0.bin" in e["error"] for e in logs)


async def test_server_errors_back_off_while_the_shadow_keeps_syncing(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path
) -> None:
    cloud.provision.misbehaviour.checkin_status = 500
    config = configure(thing_dir, cloud)
    with capture_logs() as logs:
        async with gateway_running(config) as gateway:
            thing = gateway.config.thing
            await until(lambda: cloud.provision.checkin_count >= 3)
            await shadows.update(thing, {"desired": {"led": True}})
            await shadows.wait_for(thing, lambda d: d["state"]["reported"].get("led") is True, 5)
            assert gateway.status()["checkin_error"] is not None
            cloud.provision.misbehaviour.checkin_status = None
            await until(lambda: gateway.status()["checkin_error"] is None)
    failures = [e for e in logs if e["event"] == "checkin_failed"]
    assert len(failures) >= 2 and all("500" in e["error"] for e in failures)
    assert all(0 <= e["retry_in_s"] <= 1 for e in failures)  # retry: max_s 1


async def test_a_slow_server_times_out_and_is_retried(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path
) -> None:
    cloud.provision.misbehaviour.checkin_delay_s = 5  # timeout_s is 2
    config = configure(thing_dir, cloud)
    with capture_logs() as logs:
        async with gateway_running(config):
            await until(lambda: any(e["event"] == "checkin_failed" for e in logs), 10)
    failure = next(e for e in logs if e["event"] == "checkin_failed")
    assert "no answer" in failure["error"]


async def test_refused_credentials_are_logged_as_an_auth_problem(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path
) -> None:
    cloud.provision.misbehaviour.checkin_status = 401
    (thing_dir / "token").write_text("not-the-token\n")
    config = configure(thing_dir, cloud, checkin=f"  token_file: {thing_dir / 'token'}\n")
    with capture_logs() as logs:
        async with gateway_running(config):
            await until(lambda: any(e["event"] == "checkin_auth_failed" for e in logs))
    failure = next(e for e in logs if e["event"] == "checkin_auth_failed")
    assert failure["status"] == 401
    assert "not-the-token" not in json.dumps(logs, default=str)


# --- wheel mode: A/B slots, switch, health check, commit or rollback --------------------------


def build_wheel(directory: Path, version: str) -> Path:
    """A real wheel of this checkout's ``gateway`` package, as ``version``. Its dependencies
    are not declared: the slots find them on PYTHONPATH (the test venv), so pip needs no index."""
    dist = f"edge_gateway-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((ROOT / "gateway").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        data = path.read_bytes()
        relative = path.relative_to(ROOT).as_posix()
        if relative == "gateway/__init__.py":
            data = re.sub(rb'__version__ = "[^"]*"', f'__version__ = "{version}"'.encode(), data)
        files[relative] = data
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: edge-gateway\nVersion: {version}\n"
    ).encode()
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\nedge-gateway = gateway.__main__:main\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"edge_gateway-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@pytest.fixture
def deps_on_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slot venvs (and pip in them) see the test venv's packages, never its editable gateway."""
    monkeypatch.setenv("PYTHONPATH", sysconfig.get_paths()["purelib"])


def install_first_slot(root: Path, wheels: Path) -> None:
    """What scripts/install.sh leaves: slots/a with the running version, current -> slots/a."""
    slot = root / "slots" / "a"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(slot)], check=True)
    wheel = build_wheel(wheels, __version__)
    pip = [sys.executable, "-m", "pip", "--python", str(slot / "bin" / "python"), "install"]
    subprocess.run([*pip, "-q", "--no-index", str(wheel)], check=True)
    (root / "current").symlink_to("slots/a")


def wheel_ota(root: Path, public_key: Path, health_timeout_s: float) -> str:
    return f"""\
ota:
  mode: wheel
  root: {root}
  public_key: {public_key}
  health_timeout_s: {health_timeout_s}
  system_site_packages: false
  pip_args: ["--no-index"]
  command_timeout_s: 120
"""


def start_current(root: Path, config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """systemd's ExecStart: the gateway from whatever ``current`` points to."""
    with log_file.open("ab") as output:
        return subprocess.Popen(
            [str(root / "current" / "bin" / "edge-gateway"), "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def exited(process: subprocess.Popen[bytes], timeout: float) -> int:
    async with asyncio.timeout(timeout):
        while process.poll() is None:
            await asyncio.sleep(0.1)
    return process.returncode


def log_events(log_file: Path) -> list[dict[str, Any]]:
    events = []
    for line in log_file.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def switch_to_new_version(
    cloud: DevCloud, thing_dir: Path, root: Path, keys: tuple[Path, Path], health_timeout_s: float
) -> tuple[Path, str]:
    """The running gateway (in-process, the current version) takes the offered wheel: a new
    slot, the switch, and exit code 75. Returns the config and the offered wheel's checksum."""
    wheels = thing_dir / "wheels"
    wheels.mkdir()
    await asyncio.to_thread(install_first_slot, root, wheels)
    wheel = await asyncio.to_thread(build_wheel, wheels, "9.9.0")
    # What 'edge-gateway ota sign WHEEL --product gw' makes: the bundle and its signed manifest.
    new = build_bundle(wheel, None, wheels / bundle_name(wheel))
    offer(cloud, new.name, new.read_bytes(), "9.9.0")
    sign_release(
        keys[0].read_bytes(),
        cloud.provision.artifacts_dir / new.name,
        product="gw",
        version="9.9.0",
    )
    config = configure(thing_dir, cloud, ota=wheel_ota(root, keys[1], health_timeout_s))
    async with gateway_running(config) as gateway:
        await asyncio.wait_for(gateway.stop_event.wait(), timeout=120)
        assert gateway.exit_code == EXIT_RESTART_FOR_UPDATE
    assert os.readlink(root / "current") == "slots/b"
    state = json.loads((thing_dir / "state" / "ota" / "state.json").read_text())
    assert state["pending"]["version"] == "9.9.0" and state["pending"]["previous"] == "a"
    return config, hashlib.sha256(new.read_bytes()).hexdigest()


@pytest.mark.usefixtures("deps_on_pythonpath")
async def test_wheel_update_switches_slots_and_commits_once_healthy(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path, keys: tuple[Path, Path]
) -> None:
    root = thing_dir / "opt"
    config, _ = await switch_to_new_version(cloud, thing_dir, root, keys, health_timeout_s=30)
    log_file = thing_dir / "new.log"
    process = start_current(root, config, log_file)
    try:
        thing = thing_dir.name
        doc = await shadows.wait_for(thing, ota_is("applied", "9.9.0"), 30)
        assert doc["state"]["reported"]["gateway"]["version"] == "9.9.0"
        state = json.loads((thing_dir / "state" / "ota" / "state.json").read_text())
        assert state["pending"] is None and state["last"]["state"] == "applied"
        assert os.readlink(root / "current") == "slots/b"
        await until(lambda: cloud.provision.checkins[thing]["version"] == "9.9.0", 10)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await exited(process, 15)
    assert code == 0, log_file.read_text()[-3000:]
    assert any(e["event"] == "ota_committed" for e in log_events(log_file))


@pytest.mark.usefixtures("deps_on_pythonpath")
async def test_wheel_update_that_never_gets_healthy_is_rolled_back(
    cloud: DevCloud, shadows: ShadowClient, thing_dir: Path, keys: tuple[Path, Path]
) -> None:
    root = thing_dir / "opt"
    config, checksum = await switch_to_new_version(cloud, thing_dir, root, keys, 4)
    # The new version cannot reach its broker (as if it broke the connection): never healthy.
    good = config.read_text()
    config.write_text(re.sub(r"(?m)^  port: \d+$", "  port: 9", good, count=1))
    log_file = thing_dir / "new.log"
    code = await exited(start_current(root, config, log_file), 60)
    assert code == EXIT_RESTART_FOR_UPDATE, log_file.read_text()[-3000:]
    assert os.readlink(root / "current") == "slots/a"
    state = json.loads((thing_dir / "state" / "ota" / "state.json").read_text())
    assert state["pending"] is None
    assert state["rolled_back"] == [{"version": "9.9.0", "checksum": checksum}]
    assert "within 4 s" in state["last"]["error"]
    # systemd starts current again: the previous version, which reports the rollback and does
    # not take the same artifact again although it is still offered.
    config.write_text(good)
    old_log = thing_dir / "old.log"
    process = start_current(root, config, old_log)
    try:
        thing = thing_dir.name
        doc = await shadows.wait_for(thing, ota_is("rolled_back", "9.9.0"), 30)
        assert "within 4 s" in reported_ota(doc)["error"]
        assert doc["state"]["reported"]["gateway"]["version"] == __version__
        await until(lambda: any(e["event"] == "ota_offer_skipped" for e in log_events(old_log)))
    finally:
        process.send_signal(signal.SIGTERM)
        code = await exited(process, 15)
    assert code == 0, old_log.read_text()[-3000:]
    assert os.readlink(root / "current") == "slots/a"
