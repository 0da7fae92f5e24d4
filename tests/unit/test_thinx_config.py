"""The ``thinx:`` block and ``mqtt.username``/``mqtt.password_file``, as a user writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

BASE = """\
thing: kitchen-pi
mqtt:
  host: broker.example
  ca: ca.pem
  cert: cert.pem
  key: key.pem
devices:
  door: {type: Button, pin: 4}
"""

THINX = """\
thinx:
  url: https://thinx.example:7443/
  owner: "0a1b2c"
  api_key_file: thinx.key
  mqtt: {host: thinx.example, ca: ca.pem}
"""


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem", "thinx.key", "mqtt.password"):
        (tmp_path / name).write_text("placeholder")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "gateway.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_a_thinx_block_loads_with_thinxs_defaults(cfg_dir: Path) -> None:
    config = load_config(write(cfg_dir, BASE + THINX))
    thinx = config.thinx
    assert thinx is not None
    assert thinx.url == "https://thinx.example:7443"
    assert thinx.api_key_file == cfg_dir / "thinx.key"
    assert thinx.checkin_interval_s == 86_400  # THiNXLib's default
    assert thinx.mqtt.port == 8883 and not thinx.mqtt.retain_status


def test_a_missing_api_key_file_is_reported_at_its_key(cfg_dir: Path) -> None:
    (cfg_dir / "thinx.key").unlink()
    lines = problems(write(cfg_dir, BASE + THINX))
    assert any("gateway.yaml:12:" in line and "thinx.api_key_file" in line for line in lines)


def test_plain_http_to_a_remote_thinx_server_is_refused(cfg_dir: Path) -> None:
    text = BASE + THINX.replace("https://thinx.example:7443/", "http://thinx.example")
    assert any("thinx.url" in line and "https" in line for line in problems(write(cfg_dir, text)))


def test_plaintext_mqtt_is_accepted_only_for_a_loopback_host(cfg_dir: Path) -> None:
    text = BASE + THINX.replace("ca: ca.pem}", "ca: ca.pem, port: 1883, allow_plaintext: true}")
    assert any("allow_plaintext" in line for line in problems(write(cfg_dir, text)))
    local = text.replace("host: thinx.example", "host: 127.0.0.1")
    assert load_config(write(cfg_dir, local)).thinx is not None


def test_a_status_template_naming_no_device_field_is_refused(cfg_dir: Path) -> None:
    text = BASE + THINX + '  status: "{door!r} {0}"\n'
    assert any(
        "thinx.status" in line or "status" in line for line in problems(write(cfg_dir, text))
    )


def test_the_main_link_may_log_in_with_a_user_name_and_password_file(cfg_dir: Path) -> None:
    text = BASE.replace(
        "  cert: cert.pem\n  key: key.pem\n", "  username: pi\n  password_file: mqtt.password\n"
    )
    config = load_config(write(cfg_dir, text))
    assert config.mqtt.cert is None and config.mqtt.username == "pi"
    assert config.mqtt.password_file == cfg_dir / "mqtt.password"


def test_a_user_name_needs_a_password_file(cfg_dir: Path) -> None:
    text = BASE.replace("  cert: cert.pem\n  key: key.pem\n", "  username: pi\n")
    assert any("password_file" in line for line in problems(write(cfg_dir, text)))


def test_without_a_password_the_certificate_is_still_required(cfg_dir: Path) -> None:
    text = BASE.replace("  cert: cert.pem\n", "")
    assert any(
        "mqtt.cert: required key is missing" in line for line in problems(write(cfg_dir, text))
    )


def test_a_changed_thinx_block_needs_a_restart_and_is_kept_on_reload(cfg_dir: Path) -> None:
    from gateway.ops.reload import keep_restart_only, plan_reload

    old = load_config(write(cfg_dir, BASE + THINX))
    new = load_config(write(cfg_dir, BASE + THINX.replace('"0a1b2c"', '"other"')))
    plan = plan_reload(old, new)
    assert "thinx" in plan.restart_only
    kept = keep_restart_only(old, new).thinx
    assert kept is not None and kept.owner == "0a1b2c"
