"""Shadow values per device kind: validating desired JSON and shaping reported JSON.

Pure logic, no I/O: the reconcile step asks a ``ValueCodec`` whether a desired value can be
applied (and why not), and the GPIO adapter uses the same codec to turn what it reads back
from a device into the value that goes into ``reported``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from gateway.config import (
    AngularServoConfig,
    BinaryOutputConfig,
    DigitalInputConfig,
    Mcp3008Config,
    MotorConfig,
    PwmOutputConfig,
    RgbLedConfig,
    ServoConfig,
    SystemSensorConfig,
)
from gateway.errors import DeviceValueError

JsonValue: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None
# What a device takes: on/off, a level or angle, or an RGB triple.
NativeValue: TypeAlias = bool | float | tuple[float, float, float]

# Analog read-backs are rounded so float noise from duty cycles never shows up as a delta.
ANALOG_DIGITS = 4
_HEX_COLOUR = re.compile(r"^#([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})$")


def _is_number(value: object) -> bool:
    # JSON true/false decode to bool, which Python treats as int: never a number here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_number(value: object, expected: str) -> float:
    if not _is_number(value):
        raise DeviceValueError(f"expected {expected}, got {_kind(value)}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise DeviceValueError(f"expected {expected}, got {value!r}")
    return number


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"string {shown!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _in_range(value: object, low: float, high: float, unit: str = "") -> float:
    expected = f"a number from {low:g} to {high:g}{unit}"
    number = _finite_number(value, expected)
    if not low <= number <= high:
        raise DeviceValueError(f"{number:g} is out of range; expected {expected}")
    return number


@dataclass(frozen=True)
class ValueCodec:
    """How one device's value looks in the shadow."""

    kind: str  # "switch", "level", "signed", "angle", "rgb", "input", "sensor"
    writable: bool
    low: float = 0.0
    high: float = 1.0
    digits: int = ANALOG_DIGITS

    def parse_desired(self, value: object) -> NativeValue:
        """Validate a desired value; raises ``DeviceValueError`` saying what was expected."""
        if not self.writable:
            raise DeviceValueError(f"this device is read-only ({self.kind}); it cannot be set")
        if self.kind == "switch":
            if not isinstance(value, bool):
                raise DeviceValueError(f"expected true or false, got {_kind(value)}")
            return value
        if self.kind == "rgb":
            return _parse_colour(value)
        unit = " degrees" if self.kind == "angle" else ""
        return _in_range(value, self.low, self.high, unit)

    def to_reported(self, value: object) -> JsonValue:
        """Shape a value read back from the device for ``reported``."""
        if self.kind in ("switch", "input"):
            return bool(value)
        if self.kind == "rgb":
            assert isinstance(value, tuple | list)
            return [round(float(channel), self.digits) for channel in value]
        if value is None:
            return None  # e.g. a detached servo
        number = round(float(value), self.digits)  # type: ignore[arg-type]
        return int(number) if self.digits == 0 else number


def _parse_colour(value: object) -> tuple[float, float, float]:
    expected = 'expected [r, g, b] with each 0.0 to 1.0, or "#rrggbb"'
    if isinstance(value, str):
        match = _HEX_COLOUR.match(value)
        if match is None:
            raise DeviceValueError(f"{expected}, got {_kind(value)}")
        red, green, blue = (round(int(part, 16) / 255, ANALOG_DIGITS) for part in match.groups())
        return (red, green, blue)
    if not isinstance(value, list) or len(value) != 3:
        raise DeviceValueError(f"{expected}, got {_kind(value)}")
    channels = []
    for channel in value:
        if not _is_number(channel) or not 0.0 <= float(channel) <= 1.0:
            raise DeviceValueError(f"{expected}, got {value!r}")
        channels.append(float(channel))
    return (channels[0], channels[1], channels[2])


def codec_for(device: object) -> ValueCodec:
    """The codec for a device configuration."""
    match device:
        case BinaryOutputConfig():
            return ValueCodec("switch", writable=True)
        case PwmOutputConfig():
            return ValueCodec("level", writable=True)
        case RgbLedConfig():
            return ValueCodec("rgb", writable=True)
        case ServoConfig() | MotorConfig():
            return ValueCodec("signed", writable=True, low=-1.0, high=1.0)
        case AngularServoConfig(min_angle=low, max_angle=high):
            return ValueCodec("angle", writable=True, low=min(low, high), high=max(low, high))
        case DigitalInputConfig():
            return ValueCodec("input", writable=False)
        case SystemSensorConfig(digits=digits) | Mcp3008Config(digits=digits):
            return ValueCodec("sensor", writable=False, digits=digits)
    raise TypeError(f"no value codec for {type(device).__name__}")


def initial_value(device: object) -> NativeValue | None:
    """The value an output starts at, from its config; None for inputs and sensors."""
    match device:
        case BinaryOutputConfig(initial=initial):
            return initial
        case PwmOutputConfig(initial=level) | ServoConfig(initial=level):
            return level
        case AngularServoConfig(initial=angle):
            return angle
        case RgbLedConfig(initial=colour):
            return colour
        case MotorConfig():
            return 0.0
    return None
