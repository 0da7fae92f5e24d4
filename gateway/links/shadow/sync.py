"""Keeps the devices and the thing's shadow in sync over one MQTT session at a time.

The sync half of the shadow link: a delta or a fetched document becomes a plan (``reconcile``),
the device core applies it, and one update answers it. Per session four named tasks share one
``TaskGroup``: the reader (replies and deltas, applied synchronously so a relay follows the
shadow within milliseconds), the protocol (``shadow_protocol``: requests on the wire, limits,
expiry, retries), the reporter and the event publisher (``shadow_report``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from gateway.core.outbox import Change, Outbox, OutboxWriter
from gateway.core.ports import Clock, DeviceCore, InboundMessage, MqttSession
from gateway.core.values import JsonValue
from gateway.links.shadow.desired import DesiredSync
from gateway.links.shadow.protocol import ShadowProtocol, ShadowRequest
from gateway.links.shadow.reconcile import (
    GATEWAY_KEY,
    Reconciler,
    ShadowUpdate,
)
from gateway.links.shadow.report import (
    EventPublisher,
    Reporter,
    full_reported,
)
from gateway.links.shadow.settings import ShadowLinkSettings
from gateway.links.shadow.topics import ShadowTopics

log = structlog.get_logger()

FINAL_REPORT_TIMEOUT_S = 2.0


class ShadowSync:
    """The shadow side of the gateway: owns the reconciler and the last known values."""

    def __init__(
        self,
        settings: ShadowLinkSettings,
        *,
        engine: DeviceCore,
        outbox: Outbox | None = None,
        writer: OutboxWriter | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        # The device core: this link sets values through it and hears about every change.
        self.engine = engine
        self.engine.add_listener(self)
        self._clock = clock
        self._monotonic = monotonic
        self.reporter = Reporter(monotonic)
        self.connected = False
        self.synced = asyncio.Event()  # set once a fetched document has been reconciled
        self.counters = {
            "deltas_applied": 0,
            "deltas_rejected": 0,
            "deltas_stale": 0,
            "messages_dropped": 0,
        }
        self.stopping = False
        self.first_get_in_session = True
        self._outbox = outbox if outbox is not None else Outbox(None)
        self.events = EventPublisher(self._outbox)
        # Accepted input changes reach the reporter only once the writer has them on disk.
        self.writer = writer
        # Extra entries of reported.gateway (e.g. ota, cert_expires), set by other services.
        self.gateway_status: dict[str, JsonValue] = {}
        # Replies and deltas in, device values and updates out.
        self.desired = DesiredSync(self, clock)
        self.configure(settings)

    def configure(self, settings: ShadowLinkSettings) -> None:
        """Take a (reloaded) configuration between sessions, without replacing this object:
        counters, the gateway's status entries and changes not yet reported carry over."""
        self.settings = settings
        self.thing = settings.thing
        self.topics = ShadowTopics(settings.thing, settings.shadow.name)
        self.protocol = ShadowProtocol(self.topics, self, monotonic=self._monotonic)
        self.reconciler = Reconciler(settings.codecs, reason_chars=settings.error_reason_chars)
        self.desired.reset()
        self.synced.clear()  # until a document of the new configuration is reconciled

    # -- inputs from the device side (all on the loop thread) --------------------------------

    @property
    def values(self) -> dict[str, JsonValue]:
        """The devices' current values (the engine's)."""
        return self.engine.values

    # -- what the device core tells this link --------------------------------------------------

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        """A device value changed: persist it, then schedule a coalesced report."""
        change = Change(name, value, observed_at, event=name in self.settings.event_devices)
        if self.writer is not None:
            self.writer.accept(change)
        else:
            self.on_persisted([change])
        log.debug("input_changed", device=name, value=value)

    def on_failsafe(self, name: str) -> None:
        self.desired.on_failsafe(name)

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        self.desired.on_deferred_applied(name, value)

    def on_deferred_dropped(self, name: str, reason: str) -> None:
        self.desired.on_deferred_dropped(name)

    def handle_message(self, message: InboundMessage) -> None:
        self.desired.handle_message(message)

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """Set ``reported.gateway.<key>`` now (if connected) and in every full report."""
        if self.gateway_status.get(key) == value and key in self.gateway_status:
            return
        self.gateway_status[key] = value
        if self.connected and not self.stopping:
            self.enqueue_update(ShadowUpdate(reported={GATEWAY_KEY: {key: value}}))

    def on_persisted(self, changes: list[Change]) -> None:
        """Changes are durable: report them (coalesced) and publish their events."""
        self.reporter.add(changes)
        if any(change.event for change in changes):
            self.events.wake()

    async def recover(self) -> None:
        """At start: what the outbox kept from before a crash goes out on the first session."""
        await self.reporter.recover(self._outbox)

    # -- one session ----------------------------------------------------------------------------

    async def run_session(self, session: MqttSession, stop: asyncio.Event) -> None:
        """Sync over ``session`` until ``stop`` is set (then report and return) or it drops."""
        self._reset_session()
        await session.subscribe(self.topics.subscriptions)
        await session.publish(self.settings.status, b"online", qos=1, retain=True)
        self.engine.link_up()
        self.connected = True
        log.info(
            "shadow_subscribed", topics=len(self.topics.subscriptions), shadow=self.topics.prefix
        )
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._read_loop(session), name="shadow_reader"),
                    group.create_task(self.protocol.run(session), name="shadow_protocol"),
                    group.create_task(self.reporter.run(self._send_batch), name="shadow_reporter"),
                    group.create_task(
                        self.events.run(session, self.thing, self.settings.events),
                        name="event_publisher",
                    ),
                ]
                self.protocol.request_get()
                await stop.wait()
                await self._final_report()
                for task in tasks:
                    task.cancel()
                # Said last, after the final report: "offline" on a clean stop (the Last Will
                # says it when the link dies instead).
                await session.publish(self.settings.status, b"offline", qos=1, retain=True)
        finally:
            self.connected = False
            self._abandon_requests()
            self.engine.link_down(failsafe=not self.stopping)

    def _reset_session(self) -> None:
        self.stopping = False
        self.first_get_in_session = True
        self.protocol.start_session()
        self.reporter.start_session()

    def _abandon_requests(self) -> None:
        """The session is gone: keep every unacknowledged input change for the next one."""
        for request in self.protocol.abandon():
            self.reporter.put_back(request.batch, request.observed_at)

    async def _final_report(self) -> None:
        """On shutdown: stop taking deltas, report the final state and wait briefly for it."""
        self.stopping = True
        batch, observed_at = self.reporter.take()
        request = self.enqueue_update(
            ShadowUpdate(reported=self.full_reported(), timestamp_ms=self.timestamp(observed_at)),
            batch=batch,
            observed_at=observed_at,
        )
        try:
            async with asyncio.timeout(FINAL_REPORT_TIMEOUT_S):
                await request.done.wait()
            log.info("final_state_reported")
        except TimeoutError:
            log.warning("final_state_not_confirmed", timeout_s=FINAL_REPORT_TIMEOUT_S)

    # -- reading --------------------------------------------------------------------------------

    async def _read_loop(self, session: MqttSession) -> None:
        async for message in session.messages():
            try:
                self.handle_message(message)
            except Exception as exc:  # one bad message must never end the session
                # The decoders bound what they parse; this is the last line behind them.
                self.counters["messages_dropped"] += 1
                log.error(
                    "message_handling_failed",
                    topic=message.topic,
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )

    # -- what the protocol tells the sync ---------------------------------------------------------

    def on_no_shadow(self) -> None:
        """No shadow yet: create it by reporting the devices' current state."""
        log.info("shadow_created", reason="get returned 404")
        self.first_get_in_session = False
        self.enqueue_update(ShadowUpdate(reported=self.full_reported()))
        self.synced.set()

    def on_not_accepted(self, request: ShadowRequest) -> None:
        """An update that will not be retried as it is: its input changes go out again."""
        self.reporter.put_back(request.batch, request.observed_at)

    def enqueue_update(
        self,
        update: ShadowUpdate,
        *,
        batch: dict[str, JsonValue] | None = None,
        observed_at: float | None = None,
    ) -> ShadowRequest:
        return self.protocol.enqueue_update(update, batch=batch, observed_at=observed_at)

    def _send_batch(self, batch: dict[str, JsonValue], observed_at: float | None) -> None:
        update = ShadowUpdate(reported=dict(batch), timestamp_ms=self.timestamp(observed_at))
        self.enqueue_update(update, batch=batch, observed_at=observed_at)

    def full_reported(
        self, stale_errors: frozenset[str] = frozenset(), *, stale_unknown: bool = False
    ) -> dict[str, JsonValue]:
        return full_reported(
            self.values,
            self.reconciler,
            self.gateway_status,
            stale_errors=stale_errors,
            stale_unknown=stale_unknown,
        )

    def timestamp(self, observed_at: float | None) -> int | None:
        if not self.settings.shadow.send_timestamp:
            return None
        return int((observed_at if observed_at is not None else self._clock()) * 1000)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "synced": self.synced.is_set(),
            "thing": self.thing,
            "shadow": self.settings.shadow.name,
            "shadow_version": self.reconciler.newest_version
            if self.reconciler.newest_version >= 0
            else None,
            "devices": dict(self.values),
            "errors": dict(self.reconciler.errors),
            "counters": {**self.counters, "events_published": self.events.published},
            "in_flight": self.protocol.in_flight,
            "queued": self.protocol.queued,
            "outbox": self._outbox.depth(),
        }
