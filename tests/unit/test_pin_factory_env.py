"""``pin_factory: auto`` honours ``$GPIOZERO_PIN_FACTORY`` as every gpiozero program does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from structlog.testing import capture_logs

from gateway.app import build_gateway
from gateway.config import load_config
from gateway.devices.gpio import chosen_pin_factory, make_pin_factory
from gateway.errors import GpioError


@pytest.mark.parametrize("value", ["mock", "MOCK", " mock "])
def test_auto_with_gpiozero_pin_factory_mock_makes_a_mock_factory(value: str) -> None:
    factory = make_pin_factory("auto", {"GPIOZERO_PIN_FACTORY": value})
    try:
        assert isinstance(factory, MockFactory)
    finally:
        factory.close()


def test_auto_with_a_named_library_loads_only_that_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero.pins.pigpio", None)  # import now fails
    with pytest.raises(GpioError, match="'pigpio' could not be loaded"):
        make_pin_factory("auto", {"GPIOZERO_PIN_FACTORY": "pigpio"})


def test_an_explicit_pin_factory_in_the_config_wins_over_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    with pytest.raises(GpioError, match="'lgpio' could not be loaded"):
        make_pin_factory("lgpio", {"GPIOZERO_PIN_FACTORY": "mock"})
    assert chosen_pin_factory("lgpio", {"GPIOZERO_PIN_FACTORY": "mock"}) == "lgpio"


def test_an_unknown_factory_name_says_which_variable_and_what_is_known() -> None:
    with pytest.raises(GpioError, match=r"GPIOZERO_PIN_FACTORY='nosuch'.*known: mock, lgpio"):
        make_pin_factory("auto", {"GPIOZERO_PIN_FACTORY": "nosuch"})


def test_an_empty_variable_means_auto() -> None:
    assert chosen_pin_factory("auto", {"GPIOZERO_PIN_FACTORY": ""}) == "auto"
    assert chosen_pin_factory("auto", {}) == "auto"


def test_the_choice_is_logged_with_where_it_came_from() -> None:
    with capture_logs() as events:
        make_pin_factory("auto", {"GPIOZERO_PIN_FACTORY": "mock"}).close()
    assert {"event": "gpio_pin_factory_from_environment", "factory": "mock"}.items() <= (
        events[0].items()
    )


async def test_a_gateway_on_auto_with_the_variable_mock_runs_on_mock_gpio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        "thing: pi\nmqtt: {host: h.example, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
        f"gpio: {{pin_factory: auto}}\nstate_dir: {tmp_path}/state\n"
        "devices:\n  button: {type: Button, pin: 4}\n"
    )
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    gateway = build_gateway(load_config(config_file, check_files=False))
    assert gateway.bank.is_mock  # so mock inputs and the mock sensor files work too
