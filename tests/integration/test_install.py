"""scripts/install.sh run into a throwaway root (``--root DIR``): what it leaves there, that a
second run changes nothing, and that --uninstall (--purge) removes it.

It installs what a user gets from a normal (non-editable) install: the wheel built from this
checkout (``--wheel``) with its dependencies pinned by constraints.txt, and the demo's smoke
path (``edge-gateway demo --check``) runs from that venv alone, as CI runs it on every change.
``--pip-args --no-compile`` keeps it fast (a real install compiles the bytecode)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.unit.test_constraints import read_constraints

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install.sh"
SHIPPED = {
    "gateway/resources/demo.yaml": ROOT / "config/demo.yaml",
    "gateway/resources/gateway.example.yaml": ROOT / "config/gateway.example.yaml",
    "gateway/resources/edge-gateway.service": ROOT / "systemd/edge-gateway.service",
    "gateway/resources/edge-gateway.sysusers": ROOT / "systemd/edge-gateway.sysusers",
}

# Not a unit test: it runs install.sh, pip and the systemd tools into a throwaway root.
pytestmark = pytest.mark.integration


def run(argv: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    # The installed program must not see this checkout (no PYTHONPATH, run from elsewhere).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(built_wheel: Path) -> Path:
    return built_wheel


def install(
    root: Path, *options: str, wheel: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT), "--root", str(root), "--python", sys.executable]
    command += ["--pip-args", "--no-compile", *options]
    command += ["--wheel", str(wheel)] if wheel is not None else []
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)


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
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("pi-root", numbered=True)
    result = install(root, wheel=wheel)
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


def test_the_wheel_carries_every_file_a_command_needs(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member, source in SHIPPED.items():
            assert archive.read(member) == source.read_bytes(), member
    assert "gateway/py.typed" in names
    assert {"gateway/devcloud/static/index.html", "gateway/devcloud/static/app.js"} <= names


def test_the_wheel_carries_the_license_pyproject_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = (name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        fields = archive.read(metadata).decode()
        (license_file,) = (
            name for name in archive.namelist() if name.endswith("/licenses/LICENSE")
        )
        text = archive.read(license_file).decode()
    assert "License-Expression: Apache-2.0" in fields.splitlines()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert text == (ROOT / "LICENSE").read_text()


def test_the_demo_smoke_check_passes_from_the_wheel_with_its_devcloud_extra(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, "-c", str(ROOT / "constraints.txt"), f"{wheel}[devcloud]"], timeout=600)
    code = "import gateway; print(gateway.__file__)"
    where = run([str(venv / "bin/python"), "-c", code], timeout=60, cwd=tmp_path)
    assert Path(where.strip()).resolve().is_relative_to(venv.resolve())  # not this checkout
    edge_gateway = str(venv / "bin/edge-gateway")
    demo = [edge_gateway, "demo", "--check", "--workdir", str(tmp_path / "demo")]
    out = run(demo, timeout=90, cwd=tmp_path)
    assert "demo check passed" in out and "applied and reported" in out


def test_the_demo_on_a_pi_install_names_the_extra_it_needs(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, _ = installed
    edge_gateway = root / "opt/edge-gateway/venv/bin/edge-gateway"
    argv = [str(edge_gateway), "demo", "--check", "--workdir", str(tmp_path / "demo")]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "edge-gateway: this command needs aiohttp, which comes with the 'devcloud' extra: "
        "pip install 'edge-gateway[devcloud]'"
    ]


def test_install_pins_every_dependency_to_constraints(
    installed: tuple[Path, dict[str, str]],
) -> None:
    root, _ = installed
    pins = read_constraints((ROOT / "constraints.txt").read_text())
    code = "import json, sys; from importlib.metadata import version as v; "
    code += "print(json.dumps({name: v(name) for name in sys.argv[1:]}))"
    python = root / "opt/edge-gateway/venv/bin/python"
    assert json.loads(run([str(python), "-c", code, *pins], timeout=60)) == pins


def test_install_puts_static_completion_scripts_that_parse(
    installed: tuple[Path, dict[str, str]],
) -> None:
    root, _ = installed
    bash = root / "usr/share/bash-completion/completions/edge-gateway"
    zsh = root / "usr/share/zsh/vendor-completions/_edge-gateway"
    script = bash.read_text()
    subprocess.run(["bash", "-n", str(bash)], check=True, timeout=30)
    assert "check-config" in script and "completion" in script
    assert "python" not in script  # static: a TAB runs nothing of edge-gateway
    assert zsh.read_text().startswith("#compdef edge-gateway")


def test_install_takes_the_sysusers_file_from_the_package(
    installed: tuple[Path, dict[str, str]],
) -> None:
    root, _ = installed
    sysusers = root / "etc/sysusers.d/edge-gateway.conf"
    assert sysusers.read_bytes() == (ROOT / "systemd/edge-gateway.sysusers").read_bytes()


def test_install_again_changes_nothing_and_keeps_an_edited_config(
    installed: tuple[Path, dict[str, str]], wheel: Path
) -> None:
    root, before = installed
    config = root / "etc/edge-gateway/gateway.yaml"
    original = config.read_text()
    config.write_text(original + "# edited\n")
    try:
        result = install(root, wheel=wheel)
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
