"""The small interfaces between the daemon and its libraries; adapters implement them.

The device bank (GPIO: ``adapters/gpio.py``), an MQTT session and the connector that opens one
(``adapters/mqtt.py``), the input callback and the clock. The device core (``engine``), the
connection loop, the shadow link, fleet provisioning and the timers depend on these protocols
only, never on aiomqtt or gpiozero, so they are tested with plain fakes and a driven clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from gateway.values import JsonValue, NativeValue

# Called on the event loop's thread with (device name, reported value, wall-clock epoch seconds
# at which the change was observed).
InputCallback = Callable[[str, JsonValue, float], None]
Clock = Callable[[], float]


class DeviceBank(Protocol):
    """The configured devices on one pin factory."""

    @property
    def is_mock(self) -> bool: ...

    def open(self, on_input: InputCallback) -> None:
        """Create every device (outputs at their initial value) and start input callbacks."""

    def write(self, name: str, value: NativeValue) -> JsonValue:
        """Drive an output to an already validated value; returns the value read back."""

    def read(self, name: str) -> JsonValue:
        """The current reported value of any device (a sensor read may block briefly)."""

    def drive_mock_input(self, name: str, value: JsonValue) -> None:
        """Simulate an input or sensor value; only on mock GPIO."""

    def close(self) -> None:
        """Release every pin."""


@dataclass(frozen=True)
class InboundMessage:
    topic: str
    payload: bytes


class MqttSession(Protocol):
    """One live MQTT connection."""

    async def subscribe(self, topics: Sequence[str]) -> None: ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...

    def messages(self) -> AsyncIterator[InboundMessage]:
        """Inbound messages until the connection drops (then ``MqttConnectionError``)."""
        ...


class MqttConnector(Protocol):
    """Makes connections; each ``connect()`` is one session, closed on exit."""

    async def prepare(self) -> None:
        """Load credentials up front, so bad ones fail before any pin is touched."""

    def connect(self) -> AbstractAsyncContextManager[MqttSession]: ...
