"""The connection loop: connect, run sessions, reconnect with backoff, and take commands.

Everything that must happen between two sessions arrives as one command on one queue: a
config reload (the sync reconfigured, and MQTT reconnected only if its settings changed), a
switch to renewed credentials (reconnect, and tell the renewer once the new pair connected),
a reconnect now (a link whose login changed, e.g. THiNX's first udid), or a stop. A command
ends the running session (after its final report) or the backoff wait, is applied, and the
loop goes on: no set of events to hand over, no object swapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from gateway.core.backoff import Backoff
from gateway.core.ports import InboundMessage, MqttConnector, MqttSession
from gateway.errors import CertificateRejectedError, MqttAuthError, MqttConnectionError

log = structlog.get_logger()

SessionRunner = Callable[[MqttSession, asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class ReloadOutcome:
    applied: bool
    reconnect: bool  # MQTT settings or certificate files changed


@dataclass(eq=False)
class Reload:
    """Apply a new configuration between sessions; ``applied`` says whether it was."""

    apply: Callable[[], Awaitable[ReloadOutcome]]
    applied: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False)
class SwitchConnector:
    """Reconnect through ``connector`` (renewed credentials); ``connected`` resolves once it
    has connected."""

    connector: MqttConnector
    connected: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False)
class Reconnect:
    """End the session (or the backoff wait) and connect again at once: the link's login
    changed, or it can log in now."""


@dataclass(eq=False)
class Stop:
    """End the session (after its final report) and the loop."""


Command = Reload | SwitchConnector | Reconnect | Stop


class CommandQueue:
    """Commands for the connection loop; ``pending`` is set while any waits."""

    def __init__(self) -> None:
        self._items: deque[Command] = deque()
        self.pending = asyncio.Event()

    def put(self, command: Command) -> None:
        self._items.append(command)
        self.pending.set()

    def take_all(self) -> list[Command]:
        items = list(self._items)
        self._items.clear()
        self.pending.clear()
        return items


class ConnectionLoop:
    """Owns the MQTT connector and runs one session at a time on it."""

    def __init__(
        self, connector: MqttConnector, backoff: Backoff, run_session: SessionRunner
    ) -> None:
        self.connector = connector
        self.backoff = backoff
        self._run_session = run_session
        self.commands = CommandQueue()
        self.first_attempt = asyncio.Event()  # the first connection attempt has ended
        self.reconnects = 0
        self.stopped = False
        self._waiting_switches: list[SwitchConnector] = []

    # -- what other tasks ask -----------------------------------------------------------------

    def stop(self) -> None:
        self.commands.put(Stop())

    def reconnect_now(self) -> None:
        """Connect again right away: the running session ends (after its final report), a
        backoff wait is cut short. For the link itself, when its login changed."""
        if not self.stopped:
            self.commands.put(Reconnect())

    async def reload(self, apply: Callable[[], Awaitable[ReloadOutcome]]) -> bool:
        """Run ``apply`` between two sessions; whether it applied (False if stopped first)."""
        if self.stopped:
            return False
        command = Reload(apply)
        self.commands.put(command)
        return await command.applied

    async def switch_connector(self, connector: MqttConnector, timeout_s: float) -> bool:
        """Reconnect through ``connector``; True once it has connected within ``timeout_s``."""
        if self.stopped:
            return False
        command = SwitchConnector(connector)
        self.commands.put(command)
        try:
            async with asyncio.timeout(timeout_s):
                await command.connected
        except (TimeoutError, asyncio.CancelledError):
            if not command.connected.done():
                command.connected.cancel()
            return False
        return True

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, sync, and reconnect with backoff until stopped; commands in between."""
        try:
            await self._run()
        finally:
            self.stopped = True
            for command in self.commands.take_all():
                _settle_unapplied(command)
            for switch in self._waiting_switches:
                _settle_unapplied(switch)

    async def _run(self) -> None:
        while True:
            if (await self._apply_commands()) == "stop":
                return
            connected_at: float | None = None
            delay: float
            try:
                async with self.connector.connect() as session:
                    connected_at = time.monotonic()
                    self.first_attempt.set()
                    self._connected(self.connector)
                    while True:
                        await self._run_session(session, self.commands.pending)
                        outcome = await self._apply_commands()
                        if outcome == "stop":
                            return  # clean stop: final state reported, session closed
                        if outcome == "reconnect":
                            break
                continue  # MQTT settings or credentials changed: connect again
            except* CertificateRejectedError as group:
                log.error("mqtt_certificate_rejected", error=str(group.exceptions[0]))
                delay = self.backoff.at_cap()  # retrying sooner cannot fix a certificate
            except* MqttAuthError as group:
                log.error("mqtt_auth_failed", error=str(group.exceptions[0]))
                delay = self.backoff.at_cap()  # the same user name and password fail again
            except* MqttConnectionError as group:
                lived = None if connected_at is None else time.monotonic() - connected_at
                delay = self.backoff.next_delay(lived)
                log.warning(
                    "mqtt_connection_failed",
                    error=str(group.exceptions[0]),
                    retry_in_s=round(delay, 2),
                )
            self.first_attempt.set()
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.commands.pending.wait()  # a stop, or a command to apply now

    async def _apply_commands(self) -> str:
        """Apply every waiting command; "stop", "reconnect" or "" (carry on)."""
        outcome = ""
        for command in self.commands.take_all():
            if isinstance(command, Stop):
                outcome = "stop"
            elif outcome == "stop":
                _settle_unapplied(command)
            elif isinstance(command, SwitchConnector):
                self.connector = command.connector
                self._waiting_switches.append(command)
                outcome = "reconnect"
            elif isinstance(command, Reconnect):
                outcome = "reconnect"
            else:
                try:
                    result = await command.apply()
                except BaseException:
                    command.applied.set_result(False)
                    raise
                command.applied.set_result(result.applied)
                if result.reconnect and outcome == "":
                    outcome = "reconnect"
        if outcome == "stop":
            for switch in self._waiting_switches:
                _settle_unapplied(switch)
            self._waiting_switches.clear()
        return outcome

    def _connected(self, connector: MqttConnector) -> None:
        still_waiting = []
        for switch in self._waiting_switches:
            if switch.connector is connector:
                if not switch.connected.done():
                    switch.connected.set_result(None)
            else:
                still_waiting.append(switch)
        self._waiting_switches = still_waiting


def _settle_unapplied(command: Command) -> None:
    """A command the loop will never apply (it stopped first): its waiter gets a "no"."""
    if isinstance(command, Reload) and not command.applied.done():
        command.applied.set_result(False)
    elif isinstance(command, SwitchConnector) and not command.connected.done():
        command.connected.cancel()


class _NoSession:
    """Stands in for a session when there is nothing to connect to."""

    async def subscribe(self, topics: Sequence[str]) -> None:
        return None

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        return None

    def messages(self) -> AsyncIterator[InboundMessage]:
        return self

    def __aiter__(self) -> AsyncIterator[InboundMessage]:
        return self

    async def __anext__(self) -> InboundMessage:
        await asyncio.Event().wait()  # never a message: waits until cancelled
        raise StopAsyncIteration


class NoShadowConnector:
    """The connector of the shadow's connection loop when no shadow link is configured (only
    other clouds): "connects" at once to nothing, so reloads and stop keep their one path."""

    async def prepare(self) -> None:
        return None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MqttSession]:
        yield _NoSession()
