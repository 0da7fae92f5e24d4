"""A command whose optional library is missing says which extra to install, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.extras import missing_extra

ROOT = Path(__file__).resolve().parents[2]
# Runs the CLI with aiohttp made unimportable, as on an install without the devcloud extra.
WITHOUT_AIOHTTP = (
    "import sys; sys.modules['aiohttp'] = None\n"
    "from gateway.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["devcloud", "--things", "1", "--state-dir", "{dir}"],
        ["demo", "--workdir", "{dir}"],
        ["desired", "led=true", "--workdir", "{dir}"],
    ],
)
def test_a_dev_cloud_command_without_aiohttp_names_the_extra(
    argv: list[str], tmp_path: Path
) -> None:
    args = [arg.replace("{dir}", str(tmp_path)) for arg in argv]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIOHTTP, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "edge-gateway: this command needs aiohttp, which comes with the 'devcloud' extra: "
        "pip install 'edge-gateway[devcloud]'"
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_missing_module_no_extra_provides_is_not_explained_away() -> None:
    assert missing_extra(ModuleNotFoundError("no", name="nosuchlib")) is None
    assert missing_extra(ModuleNotFoundError("no", name="aiohttp.web")) is not None
