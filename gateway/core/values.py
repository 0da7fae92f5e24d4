"""Shadow values per device kind: validating desired JSON and shaping reported JSON.

Pure logic, no I/O: the reconcile step asks a ``ValueCodec`` whether a desired value can be
applied (and why not), and the GPIO adapter uses the same codec to turn what it reads back
from a device into the value that goes into ``reported``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from gateway.errors import DeviceValueError

JsonValue: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None


@dataclass(frozen=True)
class Blink:
    """An LED blinking in the background (gpiozero's own blink); n=None blinks forever."""

    on_s: float
    off_s: float
    n: int | None

    def to_json(self) -> dict[str, Any]:
        return {"blink": {"on_s": self.on_s, "off_s": self.off_s, "n": self.n}}

    @property
    def duration_s(self) -> float | None:
        return None if self.n is None else self.n * (self.on_s + self.off_s)


# What a device takes: on/off, a level or angle, an RGB triple, or a blink pattern.
NativeValue: TypeAlias = bool | float | tuple[float, float, float] | Blink


def is_active(value: object) -> bool:
    """Whether a value turns its output on (for interlocks): true, non-zero, a lit colour."""
    if isinstance(value, Blink):
        return True
    if isinstance(value, dict):
        return "blink" in value
    if isinstance(value, tuple | list):
        return any(float(channel) > 0 for channel in value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return False


@dataclass(frozen=True)
class Transform:
    """Device value -> shadow value: invert, then scale and offset, then digits, then map.

    The inverse (for desired values) undoes each step; ``map`` must then be one-to-one.
    """

    kind: str
    invert: bool = False
    scale: float | None = None
    offset: float | None = None
    digits: int | None = None
    mapping: tuple[tuple[Any, Any], ...] | None = None
    low: float = 0.0
    high: float = 1.0

    def to_shadow(self, value: JsonValue) -> JsonValue:
        if value is None or isinstance(value, dict | list):
            return value
        current: Any = self._inverted(value) if self.invert else value
        if (self.scale is not None or self.offset is not None) and _is_number(current):
            current = float(current) * (self.scale or 1.0) + (self.offset or 0.0)
        if self.digits is not None and _is_number(current):
            current = round(float(current), self.digits)
            current = int(current) if self.digits == 0 else current
        if self.mapping is not None:
            for device_value, shadow_value in self.mapping:
                if _same(device_value, current):
                    return shadow_value  # type: ignore[no-any-return]
        result: JsonValue = current
        return result

    def to_device(self, value: object) -> object:
        if isinstance(value, dict):
            return value  # a blink pattern is not transformed
        if self.mapping is not None:
            for device_value, shadow_value in self.mapping:
                if _same(shadow_value, value):
                    value = device_value
                    break
            else:
                choices = ", ".join(json.dumps(shadow) for _, shadow in self.mapping)
                raise DeviceValueError(f"expected one of {choices}, got {_kind(value)}")
        if (self.scale is not None or self.offset is not None) and _is_number(value):
            value = (_as_float(value) - (self.offset or 0.0)) / (self.scale or 1.0)
        if self.invert:
            value = self._inverted(value)
        return value

    def _inverted(self, value: object) -> object:
        if isinstance(value, bool):
            return not value
        if not _is_number(value):
            return value
        number = _as_float(value)
        if self.kind in ("level", "sensor"):
            return self.low + self.high - number if self.kind == "level" else -number
        return self.low + self.high - number  # signed and angle ranges are symmetric here


def _same(a: object, b: object) -> bool:
    # JSON true and 1 are different values; Python's True == 1 must not match them.
    return (type(a) is type(b) and a == b) or (_is_number(a) and _is_number(b) and a == b)


# Analog read-backs are rounded so float noise from duty cycles never shows up as a delta.
ANALOG_DIGITS = 4
FULL_PRECISION_DIGITS = 6
_HEX_COLOUR = re.compile(r"^#([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})$")


def _is_number(value: object) -> bool:
    # JSON true/false decode to bool, which Python treats as int: never a number here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: object) -> float:
    """A JSON number as a float; one too large for a float is refused, never an OverflowError."""
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError as exc:
        raise DeviceValueError(f"got {_kind(value)}, too large for any device") from exc


def _finite_number(value: object, expected: str) -> float:
    if not _is_number(value):
        raise DeviceValueError(f"expected {expected}, got {_kind(value)}")
    number = _as_float(value)
    if not math.isfinite(number):
        raise DeviceValueError(f"expected {expected}, got {_kind(value)}")
    return number


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"string {shown!r}"
    if isinstance(value, int) and value.bit_length() > 64:
        # repr() of a huge int is slow, and beyond 4,300 digits raises ValueError.
        return "a number of more than 19 digits"
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
    transform: Transform | None = None
    blinkable: bool = False  # LEDs also take {"blink": {"on_s", "off_s", "n"}}

    def parse_desired(self, value: object) -> NativeValue:
        """Validate a desired value; raises ``DeviceValueError`` saying what was expected."""
        if not self.writable:
            raise DeviceValueError(f"this device is read-only ({self.kind}); it cannot be set")
        if self.blinkable and isinstance(value, dict):
            return _parse_blink(value)
        if self.transform is not None:
            value = _snap_to_range(self.transform.to_device(value), self.low, self.high)
        if self.kind == "switch":
            if not isinstance(value, bool):
                raise DeviceValueError(f"expected true or false, got {_kind(value)}")
            return value
        if self.kind == "rgb":
            return _parse_colour(value)
        unit = " degrees" if self.kind == "angle" else ""
        return _in_range(value, self.low, self.high, unit)

    def to_reported(self, value: object) -> JsonValue:
        """Shape a value read back from the device for ``reported`` (transformed)."""
        if isinstance(value, Blink):
            return value.to_json()
        shaped = self._shape(value)
        return shaped if self.transform is None else self.transform.to_shadow(shaped)

    def _shape(self, value: object) -> JsonValue:
        if self.kind in ("switch", "input"):
            return bool(value)
        if self.kind == "rgb":
            assert isinstance(value, tuple | list)
            return [round(float(channel), self.digits) for channel in value]
        if value is None:
            return None  # e.g. a detached servo
        number = round(float(value), self.digits)  # type: ignore[arg-type]
        return int(number) if self.digits == 0 else number


def _snap_to_range(value: object, low: float, high: float) -> object:
    """Undoing scale/offset can land a hair outside the range (float error): snap it back."""
    if _is_number(value):
        number = _as_float(value)
        for edge in (low, high):
            if math.isclose(number, edge, rel_tol=1e-9, abs_tol=1e-9):
                return edge
    return value


def _parse_blink(value: dict[str, Any]) -> Blink:
    expected = (
        'expected true or false, or {"blink": {"on_s": seconds, "off_s": seconds, "n": count}}'
    )
    pattern = value.get("blink")
    if set(value) != {"blink"} or not isinstance(pattern, dict):
        raise DeviceValueError(expected)
    unknown = set(pattern) - {"on_s", "off_s", "n"}
    if unknown:
        raise DeviceValueError(f"{expected}; unknown {sorted(unknown)}")
    on_s = _in_range(pattern.get("on_s", 1.0), 0.01, 3600, " s")
    off_s = _in_range(pattern.get("off_s", 1.0), 0.01, 3600, " s")
    n = pattern.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000):
        raise DeviceValueError(f"{expected}; n must be a whole number from 1, or null")
    return Blink(on_s, off_s, n)


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
        if not _is_number(channel) or not 0.0 <= _as_float(channel) <= 1.0:
            raise DeviceValueError(f"{expected}, got [{', '.join(_kind(c) for c in value)}]")
        channels.append(_as_float(channel))
    return (channels[0], channels[1], channels[2])


def codec_for(device: object) -> ValueCodec:
    """The codec for a device configuration, including its transform."""
    base = _base_codec(device)
    transform = _transform_for(device, base)
    if transform is not None:
        # Read-backs keep full precision; the transform rounds the final value to digits.
        return replace(base, transform=transform, digits=FULL_PRECISION_DIGITS)
    digits = getattr(device, "digits", None)
    return base if digits is None else replace(base, digits=digits)


def _transform_for(device: object, base: ValueCodec) -> Transform | None:
    if not getattr(device, "has_transform", False):
        return None
    mapping = getattr(device, "map", None)
    # Sensors round to digits in their codec; transformed values round after the transform.
    digits = getattr(device, "digits", None)
    return Transform(
        kind=base.kind,
        invert=getattr(device, "invert", False),
        scale=getattr(device, "scale", None),
        offset=getattr(device, "offset", None),
        digits=digits,
        mapping=tuple(mapping.items()) if mapping else None,
        low=base.low,
        high=base.high,
    )


# Device kinds by the config's ``type`` (read by name, so this module needs nothing of the
# config package and the config's checks can take these codecs as data).
_SWITCHES = frozenset({"LED", "Buzzer", "OutputDevice", "DigitalOutputDevice"})
_LEVELS = frozenset({"PWMLED", "PWMOutputDevice"})
_INPUTS = frozenset({"Button", "DigitalInputDevice", "MotionSensor", "LineSensor"})
_SENSORS = frozenset({"CPUTemperature", "LoadAverage", "DiskUsage", "MCP3008"})


def _base_codec(device: Any) -> ValueCodec:
    kind = getattr(device, "type", None)
    if kind in _SWITCHES:
        return ValueCodec("switch", writable=True, blinkable=kind == "LED")
    if kind in _LEVELS:
        return ValueCodec("level", writable=True, blinkable=kind == "PWMLED")
    if kind == "RGBLED":
        return ValueCodec("rgb", writable=True)
    if kind in ("Servo", "Motor"):
        return ValueCodec("signed", writable=True, low=-1.0, high=1.0)
    if kind == "AngularServo":
        low, high = float(device.min_angle), float(device.max_angle)
        return ValueCodec("angle", writable=True, low=min(low, high), high=max(low, high))
    if kind in _INPUTS:
        return ValueCodec("input", writable=False)
    if kind in _SENSORS:
        return ValueCodec("sensor", writable=False, digits=int(device.digits))
    raise TypeError(f"no value codec for {type(device).__name__}")


def initial_value(device: Any) -> NativeValue | None:
    """The value an output starts at, from its config; None for inputs and sensors."""
    kind = getattr(device, "type", None)
    if kind == "Motor":
        return 0.0
    if kind in _SWITCHES:
        return bool(device.initial)
    if kind in _LEVELS or kind in ("Servo", "AngularServo"):
        return float(device.initial)
    if kind == "RGBLED":
        red, green, blue = device.initial
        return (float(red), float(green), float(blue))
    return None
