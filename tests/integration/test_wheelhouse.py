"""The OTA wheelhouse (scripts/wheelhouse.sh) holds the release wheel's dependencies for a
Raspberry Pi (aarch64, Python 3.11) at exactly the versions constraints.txt pins, and
``edge-gateway ota sign --deps`` bundles them hash-pinned: a Pi updates to what CI tested."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.unit.test_constraints import canonical, read_constraints

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def wheel_pins(names: list[str]) -> dict[str, str]:
    pins = {}
    for name in names:
        project, version = Path(name).name.split("-")[:2]
        pins[canonical(project)] = version
    return pins


@pytest.fixture(scope="module")
def wheelhouse(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    script = [str(ROOT / "scripts/wheelhouse.sh"), "--out", str(out), "--wheel", str(built_wheel)]
    result = subprocess.run(script, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "deps"


def test_the_wheelhouse_holds_exactly_the_pinned_versions_for_a_pi(wheelhouse: Path) -> None:
    wheels = sorted(path.name for path in wheelhouse.glob("*.whl"))
    assert wheel_pins(wheels) == read_constraints((ROOT / "constraints.txt").read_text())
    binary = [name for name in wheels if "-none-any" not in name and "py2.py3" not in name]
    assert binary and all(name.endswith("aarch64.whl") for name in binary)
    assert all(re.search(r"-cp311-|-abi3-", name) for name in binary)


def test_the_signed_bundle_pins_the_wheel_and_the_wheelhouse(
    wheelhouse: Path, built_wheel: Path, tmp_path: Path
) -> None:
    gateway = [sys.executable, "-m", "gateway"]
    key = tmp_path / "ota.pem"
    subprocess.run([*gateway, "ota", "keygen", "--key", str(key)], check=True, timeout=60)
    wheel = tmp_path / built_wheel.name
    wheel.write_bytes(built_wheel.read_bytes())
    sign = [*gateway, "ota", "sign", str(wheel), "--key", str(key), "--product", "kitchen"]
    subprocess.run([*sign, "--deps", str(wheelhouse)], check=True, timeout=120)
    (bundle,) = tmp_path.glob("*.bundle.tar")
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("requirements.txt")
        assert member is not None
        lines = member.read().decode().splitlines()
    pinned = dict(line.split(" ")[0].split("==") for line in lines)
    expected = read_constraints((ROOT / "constraints.txt").read_text())
    assert {canonical(name): version for name, version in pinned.items()} == {
        **expected,
        "edge-gateway": wheel_pins([built_wheel.name])["edge-gateway"],
    }
