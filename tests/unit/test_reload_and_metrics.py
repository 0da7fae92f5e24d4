"""The reload decision (pure) and the Prometheus rendering (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, load_config
from gateway.config.validate import parse
from gateway.errors import ConfigError
from gateway.ops.metrics import render_prometheus
from gateway.ops.reload import files_digest, keep_restart_only, plan_reload


def config(**changes: Any) -> GatewayConfig:
    data: dict[str, Any] = {
        "thing": "pi-1",
        "mqtt": {"host": "broker", "ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
        "devices": {"led": {"type": "LED", "pin": 17}, "button": {"type": "Button", "pin": 4}},
    }
    data.update(changes)
    return parse(GatewayConfig, data, {"check_files": False})


def test_identical_configs_change_nothing() -> None:
    plan = plan_reload(config(), config())
    assert not plan.changes_anything
    assert plan.devices_changed == frozenset()
    assert plan.restart_only == ()


def test_changed_added_and_removed_devices_restart_the_session_without_reconnecting() -> None:
    new = config(devices={"led": {"type": "LED", "pin": 22}, "fan": {"type": "PWMLED", "pin": 18}})
    plan = plan_reload(config(), new)
    assert plan.devices_changed == {"led", "fan", "button"}
    assert plan.restart_session
    assert not plan.reconnect


def test_mqtt_settings_or_certificate_contents_reconnect() -> None:
    mqtt = {"host": "broker", "ca": "ca.pem", "cert": "c.pem", "key": "k.pem", "keepalive_s": 90}
    assert plan_reload(config(), config(mqtt=mqtt)).reconnect
    assert plan_reload(config(), config(), old_tls_digest="a", new_tls_digest="b").reconnect
    assert plan_reload(config(), config(thing="pi-2")).reconnect


def test_shadow_settings_restart_the_session() -> None:
    plan = plan_reload(config(), config(shadow={"name": "gpio"}))
    assert plan.restart_session and not plan.reconnect


def test_restart_only_keys_are_listed_and_kept_from_the_running_config() -> None:
    new = config(admin_socket="/tmp/other.sock", metrics={"listen": "127.0.0.1:9999"})
    plan = plan_reload(config(), new)
    assert plan.restart_only == ("admin_socket", "metrics")
    kept = keep_restart_only(config(), new)
    assert kept.admin_socket == config().admin_socket and kept.metrics is None


def test_files_digest_follows_the_contents(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("one")
    first = files_digest([cert])
    cert.write_text("two")
    assert files_digest([cert]) != first


def test_metrics_listen_must_be_an_ip_and_port(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "thing: pi\nmqtt: {host: b, ca: a, cert: b, key: c}\nmetrics:\n  listen: localhost\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, check_files=False)
    assert error.value.problems[0].startswith(f"{path}:4:3: metrics.listen: expected HOST:PORT")


def test_metrics_listen_parses_ipv4_and_ipv6() -> None:
    assert config(metrics={"listen": "127.0.0.1:9108"}).metrics.listen == ("127.0.0.1", 9108)  # type: ignore[union-attr]
    assert config(metrics={"listen": "[::1]:9108"}).metrics.listen == ("::1", 9108)  # type: ignore[union-attr]


STATUS = {
    "version": "1.2.3",
    "thing": 'pi-"1"',
    "connected": True,
    "synced": False,
    "in_flight": 2,
    "reconnects": 3,
    "healthy": True,
    "certificate_days_left": 41.5,
    "shadow_version": None,
    "devices": {"led": True, "button": False},
    "errors": {"led": "broken"},
    "counters": {"deltas_applied": 5, "deltas_rejected": 1, "deltas_stale": 0},
    "reloads_applied": 1,
    "reloads_rejected": 0,
}


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_prometheus_text_has_the_status_figures() -> None:
    values = samples(render_prometheus(STATUS))
    assert values["edge_gateway_mqtt_connected"] == "1"
    assert values["edge_gateway_shadow_synced"] == "0"
    assert values["edge_gateway_mqtt_reconnects_total"] == "3"
    assert values["edge_gateway_deltas_applied_total"] == "5"
    assert values["edge_gateway_deltas_rejected_total"] == "1"
    assert values["edge_gateway_certificate_days_left"] == "41.5"
    assert values["edge_gateway_devices"] == "2"
    assert values["edge_gateway_device_errors"] == "1"
    assert values['edge_gateway_info{version="1.2.3",thing="pi-\\"1\\""}'] == "1"


def test_unknown_figures_are_left_out_not_invented() -> None:
    text = render_prometheus(STATUS)
    assert "outbox_depth" not in text  # no outbox in the status yet
    assert "last_checkin" not in text
    assert "edge_gateway_shadow_version" not in text  # None: no document seen yet
    assert "edge_gateway_outbox_depth 4" in render_prometheus({**STATUS, "outbox_depth": 4})


def test_every_sample_has_help_and_type() -> None:
    lines = render_prometheus(STATUS).splitlines()
    names = {line.split("{")[0].split(" ")[0] for line in lines if not line.startswith("#")}
    for name in names:
        assert f"# TYPE {name} gauge" in lines or f"# TYPE {name} counter" in lines
        assert any(line.startswith(f"# HELP {name} ") for line in lines)


def test_last_checkin_and_outbox_depth_are_exported_when_known() -> None:
    status = {
        **STATUS,
        "last_checkin": "2026-11-23T12:00:00+00:00",
        "last_checkin_at": 1795435200.0,
        "outbox_depth": 3,
    }
    values = samples(render_prometheus(status))
    assert values["edge_gateway_last_checkin_timestamp_seconds"] == "1795435200.0"
    assert values["edge_gateway_outbox_depth"] == "3"
