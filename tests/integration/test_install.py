"""scripts/install.sh run into a throwaway root (``--root DIR``): what it leaves there, that a
second run changes nothing, and that --uninstall (--purge) removes it. The venv gets this
checkout without dependencies (``--pip-args --no-deps``) to keep the test offline-fast."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install.sh"

# Not a unit test: it runs install.sh, pip and the systemd tools into a throwaway root.
pytestmark = pytest.mark.integration


def install(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT), "--root", str(root), "--python", sys.executable]
    command += ["--pip-args", "--no-deps", *options]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)


def snapshot(root: Path) -> dict[str, str]:
    """Every file outside the venv, with its mode and contents (links: their target)."""
    result = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[:2] == ("opt", "edge-gateway") and relative.parts[2:3] in (
            ("venv",),
            ("slots",),
        ):
            continue
        if path.is_symlink():
            result[str(relative)] = f"-> {path.readlink()}"
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[str(relative)] = f"{path.stat().st_mode:o} {digest}"
        else:
            result[str(relative)] = f"{path.stat().st_mode:o}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("pi-root")
    result = install(root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, snapshot(root)


def test_install_creates_the_service_user(installed: tuple[Path, dict[str, str]]) -> None:
    root, _ = installed
    users = {line.split(":")[0]: line for line in (root / "etc/passwd").read_text().splitlines()}
    assert users["edge-gateway"].endswith(":/var/lib/edge-gateway:/usr/sbin/nologin")
    groups = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    assert {"edge-gateway", "gpio", "spi"} <= groups  # the unit's SupplementaryGroups exist


def test_install_places_and_enables_the_unit(installed: tuple[Path, dict[str, str]]) -> None:
    root, _ = installed
    unit = root / "etc/systemd/system/edge-gateway.service"
    assert unit.read_text() == (ROOT / "systemd/edge-gateway.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-gateway.service"
    assert wants.is_symlink()


def test_install_makes_a_venv_with_the_command(installed: tuple[Path, dict[str, str]]) -> None:
    root, _ = installed
    command = root / "opt/edge-gateway/venv/bin/edge-gateway"
    version = subprocess.run(
        [str(command), "--version"], check=True, capture_output=True, text=True, timeout=60
    )
    assert version.stdout.startswith("edge-gateway ")
    link = root / "usr/local/bin/edge-gateway"
    assert link.readlink() == Path("/opt/edge-gateway/venv/bin/edge-gateway")


def test_install_lays_out_ab_slots_for_updates(installed: tuple[Path, dict[str, str]]) -> None:
    root, _ = installed
    opt = root / "opt/edge-gateway"
    assert (opt / "current").readlink() == Path("slots/a")
    assert (opt / "venv").readlink() == Path("current")
    assert (opt / "slots/a/bin/edge-gateway").is_file()
    unit = (root / "etc/systemd/system/edge-gateway.service").read_text()
    assert "ExecStart=/opt/edge-gateway/current/bin/edge-gateway run" in unit
    assert "ReadWritePaths=-/opt/edge-gateway" in unit


def test_install_puts_a_private_example_config(installed: tuple[Path, dict[str, str]]) -> None:
    root, _ = installed
    config = root / "etc/edge-gateway/gateway.yaml"
    assert config.read_text() == (ROOT / "config/gateway.example.yaml").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "etc/edge-gateway").stat().st_mode & 0o777 == 0o750
    assert (root / "etc/edge-gateway/certs").is_dir()


def test_install_puts_the_schema_the_configs_modeline_names(
    installed: tuple[Path, dict[str, str]],
) -> None:
    root, _ = installed
    schema = root / "etc/edge-gateway/schema.json"
    assert schema.read_text() == (ROOT / "config/schema.json").read_text()
    first = (root / "etc/edge-gateway/gateway.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=schema.json"


def test_install_again_changes_nothing_and_keeps_an_edited_config(
    installed: tuple[Path, dict[str, str]],
) -> None:
    root, before = installed
    config = root / "etc/edge-gateway/gateway.yaml"
    original = config.read_text()
    config.write_text(original + "# edited\n")
    try:
        result = install(root)
        assert result.returncode == 0, result.stderr
        assert config.read_text().endswith("# edited\n")
        config.write_text(original)
        assert snapshot(root) == before
    finally:
        config.write_text(original)


def test_uninstall_removes_the_program_and_keeps_the_config(
    installed: tuple[Path, dict[str, str]],
) -> None:
    """Runs last in this module: it takes the installed root apart."""
    root, _ = installed
    result = install(root, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/systemd/system/edge-gateway.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/edge-gateway.service").exists()
    assert not (root / "opt/edge-gateway").exists()
    assert not (root / "usr/local/bin/edge-gateway").is_symlink()
    assert (root / "etc/edge-gateway/gateway.yaml").exists()
    assert install(root, "--uninstall", "--purge").returncode == 0
    assert not (root / "etc/edge-gateway").exists()


def test_uninstall_with_nothing_installed_succeeds(tmp_path: Path) -> None:
    result = install(tmp_path, "--uninstall")
    assert result.returncode == 0, result.stderr
