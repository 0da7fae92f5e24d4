"""What a Linux user expects of the real command: under systemd (stdout and stderr both the
journal, ``$JOURNAL_STREAM`` naming it) a failing run is logged once, with its priority; ``-c``
defaults to ``$EDGE_GATEWAY_CONFIG``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.devcloud import MosquittoBroker
from tests.integration.harness import write_config

pytestmark = pytest.mark.integration
GATEWAY = [sys.executable, "-m", "gateway"]


def test_a_failing_run_is_logged_once_with_priority_err_in_the_journal(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, broker, "pi-journal")
    # pigpio's daemon is not there (nor, off a Pi, its module): the run fails after the config.
    config.write_text(config.read_text().replace("pin_factory: mock", "pin_factory: pigpio"))
    journal = tmp_path / "journal"
    with journal.open("w") as stream:
        info = os.fstat(stream.fileno())
        env = {
            **os.environ,
            "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
            "PIGPIO_ADDR": "127.0.0.1",
            "PIGPIO_PORT": "9",  # discard: nothing answers
        }
        result = subprocess.run(
            [*GATEWAY, "run", "-c", str(config)],
            stdout=stream,
            stderr=stream,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    lines = journal.read_text().splitlines()
    failures = [line for line in lines if "pigpio" in line and "could not be loaded" in line]
    assert len(failures) == 1, lines
    assert failures[0].startswith("<3>{") and '"event": "gateway_failed"' in failures[0]
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines)


def test_check_config_without_c_reads_edge_gateway_config(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, broker, "pi-env-config")
    env = {**os.environ, "EDGE_GATEWAY_CONFIG": str(config)}
    result = subprocess.run(
        [*GATEWAY, "check-config"], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout and "OK" in result.stdout
