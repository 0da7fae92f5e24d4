"""The update steps on real files with a fake HTTP side: signatures (also the openssl recipe of
docs/updates.md), the A/B link switch, the start guard, the window, reuse of a verified artifact and
one update at a time."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import GatewayConfig
from gateway.config.validate import parse
from gateway.errors import UpdateError
from gateway.updates.http import Downloaded, JsonReply
from gateway.updates.ota import Updater
from gateway.updates.ota_download import artifact_name
from gateway.updates.ota_health import run_guard
from gateway.updates.ota_slots import read_slot, switch_slot
from gateway.updates.otastate import MAX_STARTS, OtaState, begin
from gateway.updates.signing import decode_signature, generate_keypair, sign_file, verify_digest

ARTIFACT = b"firmware " * 1000
SUM = hashlib.sha256(ARTIFACT).hexdigest()


def config_for(tmp_path: Path, **ota: Any) -> GatewayConfig:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    data: dict[str, Any] = {
        "thing": "pi-1",
        "mqtt": {
            "host": "h",
            "ca": tmp_path / "ca.pem",
            "cert": tmp_path / "cert.pem",
            "key": tmp_path / "key.pem",
        },
        "state_dir": tmp_path / "state",
        "checkin": {"url": "https://cloud.example/provision/checkin", "product_id": "gw"},
    }
    if ota:
        data["ota"] = ota
    return parse(GatewayConfig, data)


class FakeHttp:
    """Answers check-ins with ``offer`` and serves ``files`` (url -> bytes); counts downloads."""

    def __init__(self, offer: dict[str, Any], files: dict[str, bytes]) -> None:
        self.offer = offer
        self.files = files
        self.downloads = 0
        self.bodies: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def post_json(self, url: str, body: dict[str, Any]) -> JsonReply:
        self.bodies.append(body)
        return JsonReply(200, self.offer)

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        return self.files[url]

    async def download(self, url: str, dest: Path, **_: Any) -> Downloaded:
        self.downloads += 1
        if self.gate is not None:
            await self.gate.wait()
        dest.write_bytes(self.files[url])
        return Downloaded(len(self.files[url]), {})


def command_config(tmp_path: Path, **extra: Any) -> GatewayConfig:
    script = tmp_path / "flash.py"
    script.write_text("import shutil, sys\nshutil.copyfile(sys.argv[1], sys.argv[2])\n")
    argv = [sys.executable, str(script), "{artifact}", str(tmp_path / "flashed")]
    return config_for(tmp_path, mode="command", command=argv, **extra)


OFFER = {"version": "fw-2", "url": "https://cloud.example/a/fw-2.bin", "checksum": SUM}


# --- signatures ---------------------------------------------------------------------------------


def test_ed25519_signature_made_by_the_helper_verifies_and_tampering_fails(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    generate_keypair(private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(ARTIFACT)
    signature = decode_signature(sign_file(private.read_bytes(), artifact))
    verify_digest(public.read_bytes(), SUM, signature)
    with pytest.raises(UpdateError, match="does not verify"):
        verify_digest(public.read_bytes(), hashlib.sha256(b"other").hexdigest(), signature)
    with pytest.raises(UpdateError, match="not overwriting"):
        generate_keypair(private, public)


def test_the_readme_openssl_recipes_make_signatures_the_gateway_accepts(tmp_path: Path) -> None:
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(ARTIFACT)
    ed_key, ed_pub = tmp_path / "ed.pem", tmp_path / "ed.pub.pem"
    generate_keypair(ed_key, ed_pub)
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary", str(artifact)], capture_output=True, check=True
    ).stdout
    (tmp_path / "digest").write_bytes(digest)
    ed_sig = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-inkey", str(ed_key), "-rawin", "-in", "digest"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    verify_digest(ed_pub.read_bytes(), SUM, decode_signature(base64.b64encode(ed_sig)))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ec_sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(tmp_path / "ec.pem"), str(artifact)],
        capture_output=True,
        check=True,
    ).stdout
    verify_digest(ec_pub, SUM, decode_signature(ec_sig))  # raw DER is accepted too
    verify_digest(
        ec_pub, SUM, decode_signature(sign_file((tmp_path / "ec.pem").read_bytes(), artifact))
    )


# --- files: slots, links, guard -----------------------------------------------------------------


def test_switching_slots_replaces_the_links_atomically(tmp_path: Path) -> None:
    (tmp_path / "slots" / "a").mkdir(parents=True)
    (tmp_path / "slots" / "b").mkdir()
    assert read_slot(tmp_path) is None
    switch_slot(tmp_path, "a")
    assert read_slot(tmp_path) == "a"
    switch_slot(tmp_path, "b", previous="a")
    assert os.readlink(tmp_path / "current") == "slots/b"
    assert os.readlink(tmp_path / "previous") == "slots/a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "previous", "slots"]


def test_the_guard_rolls_back_a_version_that_keeps_failing_to_start(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    (root / "slots" / "a").mkdir(parents=True)
    (root / "slots" / "b").mkdir()
    switch_slot(root, "b", previous="a")
    config = config_for(tmp_path, mode="wheel", root=root)
    state_dir = config.state_dir / "ota"
    state_dir.mkdir(parents=True)
    state = begin(OtaState(), slot="b", previous="a", version="2", checksum=SUM, now=9e9)
    (state_dir / "state.json").write_bytes(state.dumps())
    actions = [run_guard(config, now=9e9) for _ in range(MAX_STARTS + 1)]
    assert actions == ["count"] * MAX_STARTS + ["roll_back"]
    assert read_slot(root) == "a"
    saved = json.loads((state_dir / "state.json").read_text())
    assert saved["pending"] is None and saved["last"]["state"] == "rolled_back"
    assert run_guard(config, now=9e9) == "none"


def test_artifact_names_keep_the_file_name_and_nothing_else() -> None:
    assert artifact_name("https://h/x/edge_gateway-1.0-py3-none-any.whl?sig=1") == (
        "edge_gateway-1.0-py3-none-any.whl"
    )
    assert artifact_name("https://h/../..") == "artifact"
    assert "/" not in artifact_name("https://h/a%2Fb")


# --- the updater ------------------------------------------------------------------------------


async def test_a_verified_artifact_is_not_downloaded_again(tmp_path: Path) -> None:
    reports: list[dict[str, Any]] = []
    updater = Updater(command_config(tmp_path), report=reports.append)
    http = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    (tmp_path / "flash.py").write_text("import sys\nsys.exit(3)\n")  # the MCU is not there
    await updater.check_once(http)  # type: ignore[arg-type]
    assert updater.status["state"] == "failed" and "exited with 3" in updater.status["error"]
    (tmp_path / "flash.py").write_text(
        "import shutil, sys\nshutil.copyfile(sys.argv[1], sys.argv[2])\n"
    )
    await updater.check_once(http)  # type: ignore[arg-type]
    assert updater.status == {"state": "applied", "version": "fw-2", "error": None}
    assert http.downloads == 1
    assert (tmp_path / "flashed").read_bytes() == ARTIFACT
    states = [r["state"] for r in reports]
    assert states[:4] == ["downloading", "verifying", "applying", "failed"]
    assert states[-2:] == ["applying", "applied"]
    # Applied: the next check-in reports the firmware version and nothing is offered again.
    http.offer = {}
    await updater.check_once(http)  # type: ignore[arg-type]
    assert http.bodies[-1]["version"] == "fw-2"


async def test_outside_the_window_it_downloads_but_waits_to_apply(tmp_path: Path) -> None:
    config = command_config(tmp_path, window="02:00-04:00")
    now = clock_time(1, 30)
    updater = Updater(config, local_time=lambda: now, rng=lambda low, high: 1.0)
    http = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    delay = await updater.check_once(http)  # type: ignore[arg-type]
    assert delay == pytest.approx(1801)  # back when the window opens, before the interval
    assert not (tmp_path / "flashed").exists()
    now = clock_time(2, 30)
    await updater.check_once(http)  # type: ignore[arg-type]
    assert (tmp_path / "flashed").read_bytes() == ARTIFACT
    assert http.downloads == 1


async def test_never_two_updates_at_once(tmp_path: Path) -> None:
    updater = Updater(command_config(tmp_path))
    http = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    http.gate = asyncio.Event()
    first = asyncio.create_task(updater.check_once(http))  # type: ignore[arg-type]
    second = asyncio.create_task(updater.check_once(http))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert http.downloads == 1  # the second waits for the first
    http.gate.set()
    await asyncio.gather(first, second)
    assert http.downloads == 1


async def test_an_offer_for_a_rolled_back_artifact_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    updater = Updater(config_for(tmp_path, mode="wheel", root=root))
    state = begin(OtaState(), slot="b", previous="a", version="fw-2", checksum=SUM, now=0)
    from gateway.updates.otastate import roll_back

    (tmp_path / "state" / "ota").mkdir(parents=True)
    (tmp_path / "state" / "ota" / "state.json").write_bytes(roll_back(state, "x").dumps())
    await updater.load()
    http = FakeHttp(OFFER, {OFFER["url"]: ARTIFACT})
    await updater.check_once(http)  # type: ignore[arg-type]
    assert http.downloads == 0
    assert updater.status["state"] == "rolled_back"


def test_cli_keygen_and_sign_make_a_signature_the_gateway_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    key = tmp_path / "ota.pem"
    assert main(["ota", "keygen", "--key", str(key)]) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    artifact = tmp_path / "fw.bin"
    artifact.write_bytes(ARTIFACT)
    assert main(["ota", "sign", str(artifact), "--key", str(key)]) == 0
    signature = (tmp_path / "fw.bin.sig").read_bytes()
    assert signature.endswith(b"\n") and len(signature.strip()) == 88  # base64 of 64 bytes
    public = (tmp_path / "ota.pub.pem").read_bytes()
    verify_digest(public, SUM, decode_signature(signature))
    assert "PRIVATE" not in capsys.readouterr().out
    assert main(["ota", "sign", str(artifact), "--key", str(tmp_path / "missing.pem")]) == 1


def test_cli_sign_with_a_product_writes_a_manifest_the_gateway_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main
    from gateway.updates.checkin import parse_manifest
    from gateway.updates.signing import verify_manifest

    key = tmp_path / "ota.pem"
    assert main(["ota", "keygen", "--key", str(key)]) == 0
    artifact = tmp_path / "fw.bin"
    artifact.write_bytes(ARTIFACT)
    argv = ["ota", "sign", str(artifact), "--key", str(key), "--product", "gw"]
    assert main([*argv, "--version", "2.0", "--min-version", "1.5"]) == 0
    data = (tmp_path / "fw.bin.manifest").read_bytes()
    signature = decode_signature((tmp_path / "fw.bin.manifest.sig").read_bytes())
    verify_manifest((tmp_path / "ota.pub.pem").read_bytes(), data, signature)
    manifest = parse_manifest(data)
    assert (manifest.product, manifest.version, manifest.sha256) == ("gw", "2.0", SUM)
    assert (manifest.size, manifest.min_version, manifest.downgrade) == (
        len(ARTIFACT),
        "1.5",
        False,
    )
    with pytest.raises(UpdateError, match="does not verify"):
        verify_manifest(
            (tmp_path / "ota.pub.pem").read_bytes(), data.replace(b"2.0", b"9.9"), signature
        )
    assert main([*argv, "--version=--erase-all"]) == 1  # no version is made of options
    assert main([*argv]) == 1  # a file that is not a wheel names its version
    assert "PRIVATE" not in capsys.readouterr().out


def test_manifests_signed_with_openssl_verify(tmp_path: Path) -> None:
    """docs/updates.md's openssl recipe for manifests (Ed25519 -rawin, ECDSA dgst -sha256 -sign)."""
    from gateway.updates.checkin import Manifest
    from gateway.updates.signing import verify_manifest

    manifest = tmp_path / "fw.bin.manifest"
    manifest.write_bytes(Manifest("gw", "2.0", SUM, len(ARTIFACT)).dumps())
    ed_key, ed_pub = tmp_path / "ed.pem", tmp_path / "ed.pub.pem"
    generate_keypair(ed_key, ed_pub)
    ed_sig = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-inkey", str(ed_key), "-rawin", "-in", str(manifest)],
        capture_output=True,
        check=True,
    ).stdout
    verify_manifest(ed_pub.read_bytes(), manifest.read_bytes(), ed_sig)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ec_sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(tmp_path / "ec.pem"), str(manifest)],
        capture_output=True,
        check=True,
    ).stdout
    verify_manifest(ec_pub, manifest.read_bytes(), decode_signature(base64.b64encode(ec_sig)))


def test_a_bundle_round_trips_with_every_wheel_hash_pinned(tmp_path: Path) -> None:
    from gateway.updates.signing import build_bundle, extract_bundle

    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "tinydep-1.0-py3-none-any.whl").write_bytes(b"dep")
    wheel = tmp_path / "edge_gateway-2.0-py3-none-any.whl"
    wheel.write_bytes(b"gateway")
    bundle = build_bundle(wheel, deps, tmp_path / "b.tar")
    assert build_bundle(wheel, deps, tmp_path / "again.tar").read_bytes() == bundle.read_bytes()
    requirements = extract_bundle(bundle, tmp_path / "out")
    lines = requirements.read_text().splitlines()
    assert lines == [
        f"edge_gateway==2.0 --hash=sha256:{hashlib.sha256(b'gateway').hexdigest()}",
        f"tinydep==1.0 --hash=sha256:{hashlib.sha256(b'dep').hexdigest()}",
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "wheels").iterdir()) == [
        "edge_gateway-2.0-py3-none-any.whl",
        "tinydep-1.0-py3-none-any.whl",
    ]
    (deps / "tinydep-1.1-py3-none-any.whl").write_bytes(b"dep 1.1")
    with pytest.raises(UpdateError, match="two versions of tinydep"):
        build_bundle(wheel, deps, tmp_path / "c.tar")
