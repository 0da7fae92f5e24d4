"""check-config makes run's start-up checks: every credential defect that makes ``run`` exit
1 makes ``check-config`` exit 2 naming the key, and ``--no-files`` checks structure only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.devcloud import MosquittoBroker
from gateway.devcloud.pki import DevCA

pytestmark = pytest.mark.integration
GATEWAY = [sys.executable, "-m", "gateway"]


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def config_with(folder: Path, broker: MosquittoBroker) -> Path:
    """A mock-GPIO config with its own copy of a thing's credentials (free to spoil)."""
    creds = broker.credentials("pi-check-files")
    for source, name in ((creds.ca, "ca.pem"), (creds.cert, "cert.pem"), (creds.key, "key.pem")):
        shutil.copy2(source, folder / name)
    (folder / "key.pem").chmod(0o600)
    path = folder / "gateway.yaml"
    path.write_text(
        f"thing: pi-check-files\nmqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
        "  ca: ca.pem\n  cert: cert.pem\n  key: key.pem\ngpio: {pin_factory: mock}\n"
        f"state_dir: {folder / 'state'}\nadmin_socket: {folder / 'admin.sock'}\n"
        "devices:\n  led: {type: LED, pin: 17}\n"
    )
    return path


def world_readable_key(folder: Path) -> str:
    (folder / "key.pem").chmod(0o644)
    return "mqtt.key: private key"


def key_of_another_certificate(folder: Path) -> str:
    other = DevCA.load_or_create(folder / "other-ca").issue("other", folder / "other")
    shutil.copy2(other.key, folder / "key.pem")
    return "mqtt.cert: cannot load client certificate"


def expired_certificate(folder: Path) -> str:
    old = DevCA.load_or_create(folder / "old-ca").issue("pi", folder / "old", days=-1)
    shutil.copy2(old.cert, folder / "cert.pem")
    shutil.copy2(old.key, folder / "key.pem")
    return "expired"


def unreadable_ca(folder: Path) -> str:
    (folder / "ca.pem").write_text("not a certificate\n")
    return "mqtt.ca: cannot load CA certificate"


def unusable_state_dir(folder: Path) -> str:
    config = folder / "gateway.yaml"
    blocked = folder / "ca.pem" / "state"  # below a file: nobody, root included, can make it
    config.write_text(config.read_text().replace(str(folder / "state"), str(blocked)))
    return f"state_dir: cannot use {blocked}"


@pytest.mark.parametrize(
    "spoil",
    [
        world_readable_key,
        key_of_another_certificate,
        expired_certificate,
        unreadable_ca,
        unusable_state_dir,
    ],
)
def test_a_credential_defect_run_refuses_is_refused_by_check_config(
    spoil: Callable[[Path], str], broker: MosquittoBroker, tmp_path: Path
) -> None:
    path = config_with(tmp_path, broker)
    expected = spoil(tmp_path)
    checked = cli("check-config", "-c", str(path))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert expected in checked.stderr
    assert "Traceback" not in checked.stderr
    ran = cli("run", "-c", str(path), timeout=20)
    assert ran.returncode == 1, "run refuses it too (else the check would be stricter than run)"


def test_a_config_check_config_passes_keeps_running(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    path = config_with(tmp_path, broker)
    checked = cli("check-config", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "OK (thing 'pi-check-files' on the shadow; 1 device)" in checked.stdout
    with subprocess.Popen(
        [*GATEWAY, "run", "-c", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as daemon:
        try:
            daemon.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass  # still running: as it should
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
        assert daemon.returncode in (0, -15), daemon.stdout.read() if daemon.stdout else ""


def test_no_files_checks_the_structure_without_the_certificates(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "thing: pi\nmqtt: {host: h, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
        "devices:\n  led: {type: LED, pin: 17}\n  fan: {type: PWMLED, pin: 18}\n"
    )
    checked = cli("check-config", "--no-files", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    assert (
        checked.stdout.strip()
        == f"{path}: OK (thing 'pi' on the shadow; 2 devices; files not checked)"
    )
    assert cli("check-config", "-c", str(path)).returncode == 2  # the files are missing


def test_no_files_still_reports_structure_errors(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("thing: pi\nmqtt: {host: h, ca: a, cert: b, key: c, keepalive: 5}\n")
    checked = cli("check-config", "--no-files", "-c", str(path))
    assert checked.returncode == 2
    assert "mqtt.keepalive: unknown key; did you mean `keepalive_s`?" in checked.stderr


def test_a_mindconnect_only_config_names_its_cloud_not_a_thing(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "mindconnect: {tenant: acme, ca: ca.pem}\n"
        "devices:\n  led: {type: LED, pin: 17}\n  button: {type: Button, pin: 4}\n"
    )
    checked = cli("check-config", "--no-files", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{path}: OK (MindConnect; 2 devices; files not checked)"


def test_a_config_with_every_cloud_names_each_of_them(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem", "thinx.key"):
        (tmp_path / name).write_text("placeholder")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "thing: kitchen-pi\nmqtt: {host: h, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
        "thinx: {url: 'https://thinx.example:7443', owner: abc, api_key_file: thinx.key,"
        " mqtt: {host: thinx.example}}\n"
        "mindconnect: {tenant: acme, ca: ca.pem}\n"
        "devices:\n  led: {type: LED, pin: 17}\n"
    )
    checked = cli("check-config", "--no-files", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    expected = "OK (thing 'kitchen-pi' on the shadow, THiNX, MindConnect; 1 device; files not"
    assert checked.stdout.strip() == f"{path}: {expected} checked)"


def test_a_thinx_key_file_others_can_read_is_refused_as_run_refuses_it(tmp_path: Path) -> None:
    key = tmp_path / "thinx.key"
    key.write_text("0123456789abcdef\n")
    key.chmod(0o644)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"gpio: {{pin_factory: mock}}\nstate_dir: {tmp_path / 'state'}\n"
        f"admin_socket: {tmp_path / 'admin.sock'}\n"
        "thinx: {url: 'https://127.0.0.1:9', owner: abc, api_key_file: thinx.key,"
        " mqtt: {host: 127.0.0.1, port: 9}}\n"
        "devices:\n  led: {type: LED, pin: 17}\n"
    )
    checked = cli("check-config", "-c", str(path))
    assert checked.returncode == 2
    assert f"thinx.api_key_file: {key} is readable by others (mode 644)" in checked.stderr
    assert cli("run", "-c", str(path), timeout=20).returncode == 1  # as run refuses it
    key.chmod(0o600)
    assert cli("check-config", "-c", str(path)).returncode == 0


def mindconnect_config(folder: Path, agent: str) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(
        f"gpio: {{pin_factory: mock}}\nstate_dir: {folder / 'state'}\n"
        f"admin_socket: {folder / 'admin.sock'}\n"
        f"mindconnect: {{tenant: acme, host: 127.0.0.1, port: 9, ca: ca.pem{agent}}}\n"
        "devices:\n  led: {type: LED, pin: 17}\n"
    )
    return path


def test_a_missing_mindconnect_agent_certificate_is_refused_as_run_refuses_it(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    shutil.copy2(broker.credentials("pi-mc").ca, tmp_path / "ca.pem")
    path = mindconnect_config(tmp_path, "")
    checked = cli("check-config", "-c", str(path))
    assert checked.returncode == 2
    assert "mindconnect.cert: cannot read agent certificate" in checked.stderr
    assert "edge-gateway mindconnect agent-cert" in checked.stderr
    assert cli("run", "-c", str(path), timeout=20).returncode == 1  # as run refuses it


def test_a_mindconnect_agent_pair_that_loads_passes(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    creds = broker.credentials("pi-mc")
    for source, name in ((creds.ca, "ca.pem"), (creds.cert, "cert.pem"), (creds.key, "key.pem")):
        shutil.copy2(source, tmp_path / name)
    path = mindconnect_config(tmp_path, ", cert: cert.pem, key: key.pem")
    checked = cli("check-config", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{path}: OK (MindConnect; 1 device)"
