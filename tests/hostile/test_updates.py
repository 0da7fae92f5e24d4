"""Hostile check-in servers and forged updates (issue 19, "Updates" and the check-in lines):
each test plays the attack against the dev cloud's real HTTPS Provision API (or a real local
HTTP server it redirects to) with a real gateway on mock GPIO, and asserts the daemon lives,
the pins are right and nothing forged, downgraded or redirected is applied."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
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
from aiohttp import web
from structlog.testing import capture_logs

from gateway import __version__
from gateway.cli.main import main as cli
from gateway.config import load_config
from gateway.devcloud import ShadowClient
from gateway.devcloud.web import DevCloud
from gateway.exitcodes import EXIT_RESTART_FOR_UPDATE
from gateway.links.mqtt import AiomqttSession
from gateway.updates import ota_download
from gateway.updates.signing import generate_keypair, sign_file, sign_release
from tests.integration.harness import RunningGateway, running_config
from tests.integration.test_devcloud_web import running_devcloud
from tests.integration.test_ota import (
    build_wheel,
    command_ota,
    configure,
    install_first_slot,
    kept_artifacts,
    offer,
    ota_is,
    reported_ota,
    until,
)

pytestmark = pytest.mark.integration
FIRMWARE = bytes(range(256)) * 800  # 200 KiB
LED_PIN = 17


@pytest.fixture
async def devcloud(tmp_path: Path) -> AsyncIterator[DevCloud]:
    async with running_devcloud(tmp_path / "cloud") as running:
        yield running


@pytest.fixture
async def shadow_client(devcloud: DevCloud) -> AsyncIterator[ShadowClient]:
    broker = devcloud.broker
    async with ShadowClient(
        broker.host, broker.port, broker.credentials(broker.admin_identities[0])
    ) as client:
        yield client


@pytest.fixture
async def folder(devcloud: DevCloud) -> Path:
    (thing,) = await devcloud.create_things(1, prefix="hostile")
    return thing.folder


@pytest.fixture
def signing_keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "release.pem", tmp_path / "release.pub.pem"
    generate_keypair(private, public)
    return private, public


@asynccontextmanager
async def gateway_at(config_path: Path) -> AsyncIterator[RunningGateway]:
    config = load_config(config_path)
    async with running_config(config, config.state_dir / "mock") as running:
        yield running


async def plain_http(routes: web.RouteTableDef) -> tuple[web.AppRunner, str]:
    """A plain-http server on another loopback port: "elsewhere" for the redirects."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def checked_in(cloud: DevCloud, more: int) -> None:
    """Until ``more`` further check-ins have been answered and handled (or failed)."""
    target = cloud.provision.checkin_count + more
    await until(lambda: cloud.provision.checkin_count > target, 20)


async def led_follows_desired(
    running: RunningGateway, shadows: ShadowClient, value: bool = True
) -> None:
    await shadows.update(running.thing, {"desired": {"led": value}})
    await until(lambda: running.pin(LED_PIN).state == int(value), 10)


# --- 1. hostile check-in answers ----------------------------------------------------------------


async def test_checkin_answer_nested_deep_is_dropped_and_daemon_lives(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    # 20,000 deep fits the size cap (so the nesting check refuses it); 100,000 deep does not.
    devcloud.provision.misbehaviour.checkin_body = b"[" * 20_000 + b"]" * 20_000
    config = configure(folder, devcloud)
    with capture_logs() as logs:
        async with gateway_at(config) as running:
            await checked_in(devcloud, 2)
            devcloud.provision.misbehaviour.checkin_body = b"[" * 100_000 + b"]" * 100_000
            await checked_in(devcloud, 2)
            assert running.gateway.healthy()  # every task alive: nothing ended the group
            assert running.gateway.status()["checkin_failures"] >= 4
            await led_follows_desired(running, shadow_client)
            devcloud.provision.misbehaviour.checkin_body = None  # the server is fixed: it heals
            await until(lambda: running.gateway.status()["checkin_error"] is None, 10)
    errors = [e["error"] for e in logs if e["event"] == "checkin_failed"]
    assert any("nested deeper" in e for e in errors) and any("limit is 65536" in e for e in errors)
    assert all(0 <= e["retry_in_s"] <= 1 for e in logs if e["event"] == "checkin_failed")


async def test_daemon_facing_a_nested_answer_stops_on_sigterm_within_5_s(
    devcloud: DevCloud, folder: Path
) -> None:
    """The same attack against ``edge-gateway run``: it keeps running (main: exit 1, or a hang
    that ignored SIGTERM), and SIGTERM ends it cleanly, in time."""
    devcloud.provision.misbehaviour.checkin_body = b"[" * 20_000 + b"]" * 20_000
    config = configure(folder, devcloud)
    log_file = folder / "run.log"
    process = start_daemon(config, log_file)
    try:
        await until(lambda: log_file.read_text().count('"checkin_failed"') >= 2, 20)
        assert process.poll() is None, log_file.read_text()[-2000:]
        assert (folder / "admin.sock").exists()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(asyncio.to_thread(process.wait), 5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, log_file.read_text()[-2000:]
    assert "Traceback" not in log_file.read_text()


def start_daemon(config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


class _SwallowingClient:
    """aiomqtt's publish as it behaves on Python 3.11: ``asyncio.wait_for`` on the PUBACK
    returns normally when the ack and the task's cancellation land in the same loop turn."""

    def __init__(self) -> None:
        self.ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting = asyncio.Event()

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        self.waiting.set()
        await asyncio.wait_for(self.ack, timeout=10)


async def test_a_publish_cancelled_as_its_ack_arrives_still_ends_its_task() -> None:
    """The hang behind "SIGTERM ignored": a shadow sender cancelled at shutdown kept waiting
    on its queue because the cancellation was swallowed inside publish. The race cannot be
    timed against a real broker, so the client here only reproduces wait_for's behaviour."""
    client = _SwallowingClient()
    session = AiomqttSession(client)  # type: ignore[arg-type]
    sender = asyncio.create_task(session.publish("t", b"x"))
    await client.waiting.wait()
    client.ack.set_result(None)
    sender.cancel()  # in the same turn as the ack: wait_for sees both
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(sender, 5)


async def test_huge_checkin_answer_is_cut_at_the_cap(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    streamed = 64 * 1024 * 1024
    devcloud.provision.misbehaviour.checkin_stream_bytes = streamed
    config = configure(folder, devcloud)
    with capture_logs() as logs:
        async with gateway_at(config) as running:
            await checked_in(devcloud, 1)
            await led_follows_desired(running, shadow_client)
    # The gateway hung up after 64 KiB of each answer; only what the sockets buffered went out.
    sent = devcloud.provision.streamed_answers
    assert sent and max(sent) < 16 * 1024 * 1024, sent
    failure = next(e for e in logs if e["event"] == "checkin_failed")
    assert "more than 65536 bytes" in failure["error"]


# --- 2. forged and rolled-back releases ----------------------------------------------------------


def release(
    private: Path, artifact: Path, *, version: str, product: str = "gw", downgrade: bool = False
) -> None:
    """A genuinely signed release: the signed manifest, and the digest-only ARTIFACT.sig that
    gateways before manifests check (what an attacker replays to them)."""
    key = private.read_bytes()
    artifact.with_name(artifact.name + ".sig").write_bytes(sign_file(key, artifact))
    sign_release(key, artifact, product=product, version=version, downgrade=downgrade)


def installed(folder: Path, version: str, data: bytes) -> None:
    """state.json as a command-mode gateway leaves it after applying ``version``."""
    state = folder / "state" / "ota"
    state.mkdir(parents=True, exist_ok=True)
    record = {"version": version, "checksum": hashlib.sha256(data).hexdigest()}
    (state / "state.json").write_text(json.dumps({"installed": record}))


async def test_signed_old_release_is_not_applied_as_a_downgrade(
    devcloud: DevCloud,
    shadow_client: ShadowClient,
    folder: Path,
    signing_keys: tuple[Path, Path],
) -> None:
    private, public = signing_keys
    installed(folder, "2.0", b"release 2.0")
    old = FIRMWARE[::-1]
    offer(devcloud, "fw-1.0.bin", old, "1.0")  # the genuine, signed 1.0, offered again
    release(private, devcloud.provision.artifacts_dir / "fw-1.0.bin", version="1.0")
    config = configure(folder, devcloud, ota=command_ota(folder, public))
    async with gateway_at(config) as running:
        doc = await shadow_client.wait_for(running.thing, ota_is("failed", "1.0"), 20)
        await led_follows_desired(running, shadow_client)
    assert "not newer than 2.0" in reported_ota(doc)["error"]
    assert not (folder / "flashed.bin").exists()
    assert not any(name == "fw-1.0.bin" for name, _ in devcloud.provision.artifact_requests)


async def test_signed_old_release_relabelled_as_new_is_refused(
    devcloud: DevCloud,
    shadow_client: ShadowClient,
    folder: Path,
    signing_keys: tuple[Path, Path],
) -> None:
    private, public = signing_keys
    installed(folder, "2.0", b"release 2.0")
    old = FIRMWARE[::-1]
    offer(devcloud, "fw-1.0.bin", old, "9.9.9")  # signed as 1.0, offered as 9.9.9
    release(private, devcloud.provision.artifacts_dir / "fw-1.0.bin", version="1.0")
    config = configure(folder, devcloud, ota=command_ota(folder, public))
    async with gateway_at(config) as running:
        doc = await shadow_client.wait_for(running.thing, ota_is("failed", "9.9.9"), 20)
    assert "signed manifest is for version 1.0, not 9.9.9" in reported_ota(doc)["error"]
    assert not (folder / "flashed.bin").exists()
    assert kept_artifacts(folder) == []


async def test_release_signed_for_another_product_is_refused(
    devcloud: DevCloud,
    shadow_client: ShadowClient,
    folder: Path,
    signing_keys: tuple[Path, Path],
) -> None:
    private, public = signing_keys
    offer(devcloud, "fw-3.0.bin", FIRMWARE, "3.0")
    artifact = devcloud.provision.artifacts_dir / "fw-3.0.bin"
    release(private, artifact, product="other-product", version="3.0")
    config = configure(folder, devcloud, ota=command_ota(folder, public))
    async with gateway_at(config) as running:
        doc = await shadow_client.wait_for(running.thing, ota_is("failed", "3.0"), 20)
    assert "for product 'other-product'" in reported_ota(doc)["error"]
    assert not (folder / "flashed.bin").exists()


async def test_version_shaped_like_an_option_never_reaches_the_command(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    """No public key (checksum only): the version rule holds anyway, and the start warns."""
    offer(devcloud, "fw.bin", FIRMWARE, "--erase-all")
    ota = command_ota(folder).replace('"{artifact}",', '"{artifact}", "{version}",')
    config = configure(folder, devcloud, ota=ota)
    with capture_logs() as logs:
        async with gateway_at(config) as running:
            await checked_in(devcloud, 2)
            await led_follows_desired(running, shadow_client)
    assert not (folder / "flashed.bin").exists()
    assert not any(e["event"] == "ota_command_started" for e in logs)
    failure = next(e for e in logs if e["event"] == "checkin_failed")
    assert "'version' must be 1-64 characters" in failure["error"]
    assert any(e["event"] == "ota_unsigned" for e in logs)


async def test_unsigned_downgrade_is_refused_without_a_public_key(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    installed(folder, "2.0", b"release 2.0")
    offer(devcloud, "fw-1.0.bin", FIRMWARE, "1.0")
    config = configure(folder, devcloud, ota=command_ota(folder))
    async with gateway_at(config) as running:
        doc = await shadow_client.wait_for(running.thing, ota_is("failed", "1.0"), 20)
    assert "not newer than 2.0" in reported_ota(doc)["error"]
    assert not (folder / "flashed.bin").exists()


async def test_signed_downgrade_flag_allows_a_downgrade(
    devcloud: DevCloud,
    shadow_client: ShadowClient,
    folder: Path,
    signing_keys: tuple[Path, Path],
) -> None:
    private, public = signing_keys
    installed(folder, "2.0", b"release 2.0")
    offer(devcloud, "fw-1.0.bin", FIRMWARE, "1.0")
    artifact = devcloud.provision.artifacts_dir / "fw-1.0.bin"
    release(private, artifact, version="1.0", downgrade=True)
    config = configure(folder, devcloud, ota=command_ota(folder, public))
    async with gateway_at(config) as running:
        await shadow_client.wait_for(running.thing, ota_is("applied", "1.0"), 20)
    assert (folder / "flashed.bin").read_bytes() == FIRMWARE


# --- 3. redirects ----------------------------------------------------------------------------


async def test_artifact_redirect_to_plain_http_elsewhere_is_refused(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    routes = web.RouteTableDef()
    fetched: list[str] = []

    @routes.get("/fw-2.0.bin")
    async def artifact(request: web.Request) -> web.Response:
        fetched.append(request.headers.get("Authorization", ""))
        return web.Response(body=FIRMWARE)

    runner, elsewhere = await plain_http(routes)
    try:
        offer(devcloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")  # checksum of the real artifact
        devcloud.provision.misbehaviour.artifact_redirect = f"{elsewhere}/fw-2.0.bin"
        config = configure(folder, devcloud, ota=command_ota(folder))
        with capture_logs() as logs:
            async with gateway_at(config) as running:
                await checked_in(devcloud, 2)
                await led_follows_desired(running, shadow_client)
    finally:
        await runner.cleanup()
    assert fetched == []
    assert not (folder / "flashed.bin").exists()
    failure = next(e for e in logs if e["event"] == "checkin_failed")
    assert "redirected (302)" in failure["error"] and "only https" in failure["error"]
    assert kept_artifacts(folder) == []


async def test_checkin_redirect_to_plain_http_is_not_followed(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    routes = web.RouteTableDef()
    seen: list[str] = []

    @routes.post("/provision/checkin")
    async def checkin(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        base = f"http://{request.host}"
        checksum = hashlib.sha256(FIRMWARE).hexdigest()
        return web.json_response(
            {"version": "fw-6.6", "url": f"{base}/x.bin", "checksum": checksum}
        )

    @routes.get("/x.bin")
    async def artifact(request: web.Request) -> web.Response:
        return web.Response(body=FIRMWARE)

    runner, elsewhere = await plain_http(routes)
    try:
        devcloud.provision.misbehaviour.checkin_redirect = f"{elsewhere}/provision/checkin"
        (folder / "token").write_text("secret-bearer-token\n")
        extra = f"  token_file: {folder / 'token'}\n"
        config = configure(folder, devcloud, checkin=extra, ota=command_ota(folder))
        with capture_logs() as logs:
            async with gateway_at(config) as running:
                await checked_in(devcloud, 2)
                await led_follows_desired(running, shadow_client)
    finally:
        await runner.cleanup()
    assert seen == []  # neither the request nor the bearer token went elsewhere
    assert not (folder / "flashed.bin").exists()
    failure = next(e for e in logs if e["event"] == "checkin_failed")
    assert "redirected (307)" in failure["error"]
    assert "secret-bearer-token" not in json.dumps(logs, default=str)


# --- 4. the disk and .part files ---------------------------------------------------------------


async def test_artifact_without_length_stops_at_min_free_bytes_and_part_is_removed(
    devcloud: DevCloud,
    shadow_client: ShadowClient,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A "disk" of 3 MiB (the state folder's bytes count against it) and min_free_bytes of
    1 MiB; the server streams a 4 MiB artifact without Content-Length."""
    mib = 1024 * 1024
    firmware = os.urandom(4 * mib)
    lowest: list[int] = []

    def free_bytes(path: Path) -> int:
        used = sum(p.stat().st_size for p in (folder / "state" / "ota").rglob("*.part"))
        lowest.append(3 * mib - used)
        if min(lowest) < mib:  # refused once: the "disk" stays full, retries stop at once
            return 0
        return 3 * mib - used

    monkeypatch.setattr(ota_download, "disk_free", free_bytes)
    offer(devcloud, "fw-2.0.bin", firmware, "fw-2.0")
    devcloud.provision.misbehaviour.artifact_chunked = True
    ota = command_ota(folder) + f"  min_free_bytes: {mib}\n"
    config = configure(folder, devcloud, ota=ota)
    with capture_logs() as logs:
        async with gateway_at(config) as running:
            await checked_in(devcloud, 1)
            await led_follows_desired(running, shadow_client)
    failure = next(e for e in logs if e["event"] == "checkin_failed")
    assert "not enough disk space" in failure["error"]
    assert min(lowest) >= 0  # it stopped before the "disk" was full
    assert not (folder / "flashed.bin").exists()
    assert kept_artifacts(folder) == []  # the .part went with the failure


async def test_part_of_a_withdrawn_offer_is_removed(
    devcloud: DevCloud, shadow_client: ShadowClient, folder: Path
) -> None:
    offer(devcloud, "fw-2.0.bin", FIRMWARE, "fw-2.0")
    faults = devcloud.provision.misbehaviour
    faults.truncate_at, faults.truncate_times = len(FIRMWARE) // 2, 1000  # every try is cut
    config = configure(folder, devcloud, ota=command_ota(folder))
    async with gateway_at(config) as running:
        await until(lambda: any(p.name.endswith(".part") for p in kept_artifacts(folder)), 10)
        (devcloud.state_dir / "provision" / "offers.json").write_text("{}")  # withdrawn
        await until(lambda: kept_artifacts(folder) == [], 10)
        await led_follows_desired(running, shadow_client)
    assert not (folder / "flashed.bin").exists()


# --- 5. wheel mode: a hash-pinned bundle, never the index ---------------------------------------


def plain_wheel(directory: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal real wheel of ``files`` (a dependency for the bundle)."""
    dist = f"{project}-{version}.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode()
        ),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    return _write_wheel(directory / f"{project}-{version}-py3-none-any.whl", dist, files)


def _write_wheel(path: Path, dist: str, files: dict[str, bytes]) -> Path:
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files = {**files, f"{dist}/RECORD": ("\n".join(record) + "\n").encode()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def gateway_wheel_requiring(directory: Path, version: str, dependency: str) -> Path:
    """This checkout's gateway as a wheel of ``version`` that declares ``dependency``."""
    wheel = build_wheel(directory, version)
    dist = f"edge_gateway-{version}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        files = {
            name: archive.read(name) for name in archive.namelist() if name != f"{dist}/RECORD"
        }
    files[f"{dist}/METADATA"] += f"Requires-Dist: {dependency}\n".encode()
    return _write_wheel(wheel, dist, files)


@pytest.fixture
def index_spy() -> Callable[[], Any]:
    """A package index that records every request (pip's PIP_INDEX_URL points here)."""
    state: dict[str, Any] = {"requests": []}

    @asynccontextmanager
    async def start() -> AsyncIterator[list[str]]:
        async def anything(request: web.Request) -> web.Response:
            state["requests"].append(request.path)
            return web.Response(status=404)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/simple/"
        try:
            yield state["requests"]
        finally:
            await runner.cleanup()

    return lambda: (start(), state)


async def test_wheel_update_installs_its_bundle_and_never_the_index(
    devcloud: DevCloud,
    shadow_client: ShadowClient,
    folder: Path,
    signing_keys: tuple[Path, Path],
    index_spy: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signed plain wheel with a dependency (main: pip resolved it from the index at update
    time) is refused; the bundle 'ota sign --deps' made offline carries the dependency,
    hash-pinned, and installs with the index never asked."""
    monkeypatch.setenv("PYTHONPATH", sysconfig.get_paths()["purelib"])
    private, public = signing_keys
    root, wheels, deps = folder / "opt", folder / "wheels", folder / "deps"
    wheels.mkdir()
    deps.mkdir()
    await asyncio.to_thread(install_first_slot, root, wheels)
    wheel = await asyncio.to_thread(gateway_wheel_requiring, wheels, "9.9.0", "tinydep")
    plain_wheel(deps, "tinydep", "1.0", {"tinydep.py": b"VALUE = 42\n"})
    context, spy = index_spy()
    async with context as requests:
        monkeypatch.setenv("PIP_INDEX_URL", spy["url"])
        # The attack: the signed wheel alone, its dependency left to the index.
        offer(devcloud, wheel.name, wheel.read_bytes(), "9.9.0")
        artifact = devcloud.provision.artifacts_dir / wheel.name
        release(private, artifact, version="9.9.0")
        ota = f"""\
ota:
  mode: wheel
  root: {root}
  public_key: {public}
  health_timeout_s: 30
  system_site_packages: false
  command_timeout_s: 120
"""
        config = configure(folder, devcloud, ota=ota)
        async with gateway_at(config) as running:
            doc = await shadow_client.wait_for(running.thing, ota_is("failed", "9.9.0"), 60)
            assert "needs a bundle" in reported_ota(doc)["error"]
            assert requests == []
            assert os.readlink(root / "current") == "slots/a"
            # The fix: the bundle of the wheel and its dependency, made offline.
            assert cli(["ota", "sign", str(wheel), "--key", str(private), "--product", "gw",
                        "--deps", str(deps)]) == 0  # fmt: skip
            bundle = wheels / "edge_gateway-9.9.0.bundle.tar"
            for suffix in ("", ".manifest", ".manifest.sig"):
                source = bundle.with_name(bundle.name + suffix)
                (devcloud.provision.artifacts_dir / source.name).write_bytes(source.read_bytes())
            offer(devcloud, bundle.name, bundle.read_bytes(), "9.9.0")
            await asyncio.wait_for(running.gateway.stop_event.wait(), 120)
            assert running.gateway.exit_code == EXIT_RESTART_FOR_UPDATE
    assert requests == []  # pip never asked the index
    assert os.readlink(root / "current") == "slots/b"
    slot_python = root / "slots" / "b" / "bin" / "python"
    probe = await asyncio.to_thread(
        subprocess.run,
        [
            str(slot_python),
            "-c",
            "import tinydep, gateway; print(tinydep.VALUE, gateway.__version__)",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd=folder,  # not the checkout, whose gateway/ would be imported instead
        check=False,
    )
    assert probe.stdout.split() == ["42", "9.9.0"], probe.stderr[-2000:]
    assert __version__ != "9.9.0"


async def test_bundle_with_an_unpinned_or_foreign_member_is_refused(tmp_path: Path) -> None:
    """The bundle reader takes only requirements.txt and wheels/*.whl, every line hash-pinned."""
    import io
    import tarfile

    from gateway.errors import UpdateError
    from gateway.updates.signing import extract_bundle

    def bundle(members: dict[str, bytes], *, link: bool = False) -> Path:
        path = tmp_path / f"b{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(path, "w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            if link:
                info = tarfile.TarInfo("wheels/evil.whl")
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                archive.addfile(info)
        return path

    pinned = b"tinydep==1.0 --hash=sha256:" + b"a" * 64 + b"\n"
    cases = {
        "not a hash-pinned": {"requirements.txt": b"tinydep\n"},
        "not a hash-pinned ": {"requirements.txt": b"--index-url http://evil/\n" + pinned},
        "unexpected bundle member": {"requirements.txt": pinned, "../escape.whl": b""},
        "has no requirements": {"wheels/x-1.0-py3-none-any.whl": b""},
    }
    for message, members in cases.items():
        with pytest.raises(UpdateError, match=message.strip()):
            extract_bundle(bundle(members), tmp_path / "out")
    with pytest.raises(UpdateError, match="unexpected bundle member"):
        extract_bundle(bundle({"requirements.txt": pinned}, link=True), tmp_path / "out2")
    assert not (tmp_path / "escape.whl").exists()
    with contextlib.suppress(FileNotFoundError):
        assert not any((tmp_path / "out2" / "wheels").iterdir())
