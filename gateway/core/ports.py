"""The small interfaces between the daemon and its libraries; adapters implement them.

The device bank (GPIO), an MQTT session and the connector that opens one, the input callback
and the clock; and the device core as a cloud link sees it (``DeviceCore``, what it tells its
listeners, ``EngineListener``, and what became of a change, ``Outcome``). The device core, the
connection loop, the cloud links, fleet provisioning and the timers depend on these protocols
only, never on aiomqtt, gpiozero or each other, so they are tested with plain fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.values import JsonValue, NativeValue

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


class EngineListener(Protocol):
    """What a cloud link hears from the device core (all on the loop's thread)."""

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        """An input or sensor changed, the engine changed an output by itself, or another
        listener (link) set it through ``DeviceCore.apply``/``restore``."""

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        """A value this listener asked for (``apply(..., origin=self)``), held back by the
        output's minimum interval, has now been applied (the others hear ``on_change``)."""

    def on_deferred_dropped(self, name: str, reason: str) -> None:
        """A value this listener asked for, held back, will not be applied: another
        listener's newer value replaced it (that one lands instead), or it was refused when
        its turn came (an interlock, a failing pin); ``reason`` says which."""

    def on_failsafe(self, name: str) -> None:
        """The output was driven to its fail-safe value (no link is up)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one "set these values": applied (read back), refused, or held back."""

    applied: dict[str, JsonValue] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # name -> reason
    deferred: frozenset[str] = frozenset()


class DeviceCore(Protocol):
    """The device core as a cloud link sees it: set values, hear about changes."""

    @property
    def values(self) -> dict[str, JsonValue]:
        """Every device's current value."""
        ...

    def add_listener(self, listener: EngineListener) -> None: ...

    def prime(self, values: Mapping[str, JsonValue]) -> None: ...

    def on_input(self, name: str, value: JsonValue, observed_at: float) -> None: ...

    def apply(
        self, changes: Mapping[str, NativeValue], *, origin: EngineListener | None = None
    ) -> Outcome:
        """Set validated values (interlocks, minimum intervals and follows applied).
        ``origin``, the listener asking, handles the ``Outcome``; every other listener
        hears each applied value (``on_change``)."""
        ...

    def restore(
        self, values: Mapping[str, NativeValue], *, origin: EngineListener | None = None
    ) -> None: ...

    def link_up(self) -> None: ...

    def link_down(self, *, failsafe: bool = True) -> None: ...


class CloudLink(Protocol):
    """One cloud behind the device core: the AWS IoT shadow today, THiNX and MindConnect
    beside it. A link listens to the device core (``DeviceCore.add_listener``), sets values
    through it, and runs one session at a time on a connection its ``ConnectionLoop`` opens;
    several links run at once, each with its own loop. It reaches no other link."""

    connected: bool

    async def run_session(self, session: MqttSession, stop: asyncio.Event) -> None:
        """Sync over ``session`` until ``stop`` is set (then report and return) or it drops."""

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """Show one entry of the gateway's own status (OTA, certificate expiry) to the cloud."""

    def status(self) -> dict[str, Any]:
        """What ``edge-gateway status`` and the metrics show of this link."""


class MqttConnector(Protocol):
    """Makes connections; each ``connect()`` is one session, closed on exit."""

    async def prepare(self) -> None:
        """Load credentials up front, so bad ones fail before any pin is touched."""

    def connect(self) -> AbstractAsyncContextManager[MqttSession]: ...


LinkTask = Callable[[], Coroutine[Any, Any, None]]


def _no_connection_loop() -> None:
    """A link without MQTT (no connection loop): nothing to reconnect."""


@dataclass(frozen=True)
class GatewayFacts:
    """What a link beside the shadow may ask of the gateway once it is built: whether the main
    (shadow) link is up, whether the gateway reports device errors (``reported.gateway.errors``),
    its update machinery (a ``gateway.updates.ota.Updater``; typed loosely because the core
    imports no service), and a way to make the link's own connection loop connect again at
    once (its login changed, or it can log in now)."""

    main_link_up: Callable[[], bool]
    gateway_errors: Callable[[], bool]
    updater: object
    reconnect_now: Callable[[], None] = _no_connection_loop


@dataclass(frozen=True)
class LinkPlan:
    """A cloud link the gateway runs beside the shadow (THiNX, MindConnect, ...): the link,
    the connector its own connection loop opens MQTT sessions on (None for a link without
    MQTT), and the named background tasks it needs besides (an HTTP check-in, say). The
    gateway supervises them all in its task group and shows ``link.status()`` under
    ``links.<name>`` in ``edge-gateway status``."""

    name: str
    link: CloudLink
    connector: MqttConnector | None = None
    tasks: Mapping[str, LinkTask] = field(default_factory=dict)
    # Called once the gateway is built (its updater exists), before anything runs.
    attach: Callable[[GatewayFacts], None] | None = None
