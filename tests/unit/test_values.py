"""Desired-value validation and reported shaping per device kind."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import (
    AngularServoConfig,
    BinaryOutputConfig,
    DigitalInputConfig,
    PwmOutputConfig,
    RgbLedConfig,
    ServoConfig,
    SystemSensorConfig,
)
from gateway.core.values import codec_for, initial_value
from gateway.errors import DeviceValueError

LED = codec_for(BinaryOutputConfig(type="LED", pin=17))
FAN = codec_for(PwmOutputConfig(type="PWMLED", pin=18))
SERVO = codec_for(ServoConfig(type="Servo", pin=12))
ARM = codec_for(AngularServoConfig(type="AngularServo", pin=13, min_angle=90, max_angle=-90))
RGB = codec_for(RgbLedConfig(type="RGBLED", red=5, green=6, blue=13))
BUTTON = codec_for(DigitalInputConfig(type="Button", pin=4))
CPU = codec_for(SystemSensorConfig(type="CPUTemperature", digits=1))


def test_switch_accepts_booleans() -> None:
    assert LED.parse_desired(True) is True
    assert LED.parse_desired(False) is False


@pytest.mark.parametrize("bad", [1, 0, "on", None, [True], {"on": True}])
def test_switch_refuses_anything_but_a_boolean(bad: object) -> None:
    with pytest.raises(DeviceValueError, match="expected true or false"):
        LED.parse_desired(bad)


def test_level_refuses_a_boolean_even_though_python_calls_it_an_int() -> None:
    with pytest.raises(DeviceValueError, match="got boolean true"):
        FAN.parse_desired(True)


@given(st.floats(min_value=0.0, max_value=1.0))
def test_level_accepts_every_value_in_range(level: float) -> None:
    assert FAN.parse_desired(level) == level


@given(st.floats().filter(lambda x: not 0.0 <= x <= 1.0))
def test_level_refuses_every_value_out_of_range(level: float) -> None:
    with pytest.raises(DeviceValueError):
        FAN.parse_desired(level)


def test_out_of_range_message_says_the_range() -> None:
    with pytest.raises(
        DeviceValueError, match=r"1.5 is out of range; expected a number from -1 to 1"
    ):
        SERVO.parse_desired(1.5)


def test_angular_servo_range_follows_the_configured_angles_in_any_order() -> None:
    assert ARM.parse_desired(-45) == -45.0
    with pytest.raises(DeviceValueError, match="degrees"):
        ARM.parse_desired(91)


def test_rgb_accepts_a_list_and_a_hex_colour() -> None:
    assert RGB.parse_desired([1, 0, 0.5]) == (1.0, 0.0, 0.5)
    assert RGB.parse_desired("#ff0000") == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("bad", [[1, 0], [1, 0, 2], "#ff00", "red", [True, 0, 0]])
def test_rgb_refuses_malformed_colours(bad: object) -> None:
    with pytest.raises(DeviceValueError, match="r, g, b"):
        RGB.parse_desired(bad)


def test_inputs_and_sensors_are_read_only() -> None:
    for codec in (BUTTON, CPU):
        with pytest.raises(DeviceValueError, match="read-only"):
            codec.parse_desired(True)


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(DeviceValueError):
        FAN.parse_desired(math.nan)


def test_analog_read_back_is_rounded_so_float_noise_is_not_reported() -> None:
    assert FAN.to_reported(0.30000000000000004) == 0.3


def test_sensor_read_back_is_rounded_to_its_digits() -> None:
    assert CPU.to_reported(45.678) == 45.7


def test_rgb_read_back_is_a_list() -> None:
    assert RGB.to_reported((1.0, 0.0, 0.5)) == [1.0, 0.0, 0.5]


def test_initial_value_comes_from_the_config() -> None:
    assert initial_value(BinaryOutputConfig(type="LED", pin=1, initial=True)) is True
    assert initial_value(DigitalInputConfig(type="Button", pin=1)) is None
