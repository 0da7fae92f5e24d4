"""A device bank in memory, for unit tests of the device core and the shadow link (pure logic
only: the integration tests use gpiozero's MockFactory)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.values import Blink, JsonValue, NativeValue


class FakeBank:
    """Pins as a dict; every write recorded; names in ``fail`` raise like a broken pin."""

    is_mock = True

    def __init__(self, pins: Mapping[str, JsonValue]) -> None:
        self.pins: dict[str, JsonValue] = dict(pins)
        self.writes: list[tuple[str, NativeValue]] = []
        self.fail: set[str] = set()

    def write(self, name: str, value: NativeValue) -> JsonValue:
        if name in self.fail:
            raise RuntimeError("the pin broke")  # not a GatewayError: must still not escape
        self.writes.append((name, value))
        self.pins[name] = value.to_json() if isinstance(value, Blink) else value  # type: ignore[assignment]
        return self.pins[name]

    def read(self, name: str) -> JsonValue:
        return self.pins[name]

    def open(self, on_input: Any) -> None: ...
    def drive_mock_input(self, name: str, value: JsonValue) -> None: ...
    def close(self) -> None: ...
