"""The ``checkin:`` and ``ota:`` config blocks: defaults, and errors at FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

BASE = """\
thing: pi-1
mqtt: {host: h, ca: ca.pem, cert: cert.pem, key: key.pem}
"""


def load(tmp_path: Path, extra: str) -> object:
    for name in ("ca.pem", "cert.pem", "key.pem", "token"):
        (tmp_path / name).write_text("x")
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + extra)
    return load_config(path)


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extra)
    return caught.value.problems


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "checkin: {url: 'https://iot.example/provision/checkin', product_id: gw, "
        "token_file: token}\nota: {mode: wheel}\n",
    )
    assert config.checkin is not None and config.ota is not None  # type: ignore[attr-defined]
    checkin, ota = config.checkin, config.ota  # type: ignore[attr-defined]
    assert checkin.interval_s == 3600 and checkin.timeout_s == 30 and not checkin.test
    assert checkin.token_file == tmp_path / "token"
    assert ota.root == Path("/opt/edge-gateway") and ota.health_timeout_s == 300


def test_plain_http_is_refused_outside_loopback(tmp_path: Path) -> None:
    lines = problems(tmp_path, "checkin:\n  url: http://iot.example/x\n  product_id: gw\n")
    assert lines == [
        f"{tmp_path / 'gateway.yaml'}:4:3: checkin.url: expected https:// "
        "(plain http:// is accepted only for a loopback host)"
    ]
    load(tmp_path, "checkin: {url: 'http://127.0.0.1:8443/provision/checkin', product_id: gw}\n")


def test_command_mode_needs_a_command_and_windows_are_checked(tmp_path: Path) -> None:
    assert "needs 'command'" in problems(tmp_path, "ota: {mode: command}\n")[0]
    assert "02:00-04:00" in problems(tmp_path, "ota: {mode: wheel, window: '2-4'}\n")[0]
    assert "does not exist" in problems(tmp_path, "ota: {mode: wheel, public_key: nope.pem}\n")[0]
    assert "unknown key" in problems(tmp_path, "ota: {mode: wheel, shell: true}\n")[0]
