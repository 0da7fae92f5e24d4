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
from collections.abc import Mapping
from typing import Any

import structlog

from gateway.config import ShadowConfig
from gateway.core.outbox import Change, Outbox, OutboxWriter
from gateway.core.ports import Clock, DeviceCore, InboundMessage, MqttSession
from gateway.core.values import JsonValue, ValueCodec
from gateway.links.shadow.messages import (
    DeltaMessage,
    ErrorReply,
    PayloadError,
    ShadowDocument,
    UpdateAccepted,
    parse_reply,
)
from gateway.links.shadow.protocol import ShadowProtocol, ShadowRequest
from gateway.links.shadow.reconcile import (
    GATEWAY_KEY,
    MAX_ERROR_REASON_CHARS,
    DeltaPlan,
    FailsafeMemory,
    Reconciler,
    ShadowUpdate,
)
from gateway.links.shadow.report import (
    EventPublisher,
    Reporter,
    drift,
    error_names,
    full_reported,
    has_unknown_summary,
)
from gateway.links.shadow.topics import ShadowTopics

log = structlog.get_logger()

FINAL_REPORT_TIMEOUT_S = 2.0


class ShadowSync:
    """The shadow side of the gateway: owns the reconciler and the last known values."""

    def __init__(
        self,
        *,
        thing: str,
        shadow: ShadowConfig,
        engine: DeviceCore,
        codecs: Mapping[str, ValueCodec],
        restore: frozenset[str] = frozenset(),
        outbox: Outbox | None = None,
        writer: OutboxWriter | None = None,
        event_devices: frozenset[str] = frozenset(),
        events_topic: str | None = None,
        status_topic: str | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        error_reason_chars: int = MAX_ERROR_REASON_CHARS,
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
        self._stopping = False
        self._first_get_in_session = True
        self._outbox = outbox if outbox is not None else Outbox(None)
        self.events = EventPublisher(self._outbox)
        # Accepted input changes reach the reporter only once the writer has them on disk.
        self._writer = writer
        # Extra entries of reported.gateway (e.g. ota, cert_expires), set by other services.
        self.gateway_status: dict[str, JsonValue] = {}
        self._last_cloud_time: float | None = None  # the shadow service's clock, from replies
        self.configure(
            thing=thing,
            shadow=shadow,
            codecs=codecs,
            restore=restore,
            event_devices=event_devices,
            events_topic=events_topic,
            status_topic=status_topic,
            error_reason_chars=error_reason_chars,
        )

    def configure(
        self,
        *,
        thing: str,
        shadow: ShadowConfig,
        codecs: Mapping[str, ValueCodec],
        restore: frozenset[str] = frozenset(),
        event_devices: frozenset[str] = frozenset(),
        events_topic: str | None = None,
        status_topic: str | None = None,
        error_reason_chars: int = MAX_ERROR_REASON_CHARS,
    ) -> None:
        """Take a (reloaded) configuration between sessions, without replacing this object:
        counters, the gateway's status entries and changes not yet reported carry over."""
        self.thing = thing
        self.topics = ShadowTopics(thing, shadow.name)
        self.protocol = ShadowProtocol(self.topics, self, monotonic=self._monotonic)
        self._shadow = shadow
        self._restore = restore
        self.reconciler = Reconciler(codecs, reason_chars=error_reason_chars)
        self._restored = False  # outputs to restore are restored from the next document
        self._event_devices = event_devices
        self._events_topic = events_topic or f"things/{thing}/events"
        self._status_topic = status_topic or f"things/{thing}/status"
        self._deferred_versions: dict[str, int] = {}  # held back by min_interval: its version
        self._failsafed = FailsafeMemory()
        self.synced.clear()  # until a document of the new configuration is reconciled

    # -- inputs from the device side (all on the loop thread) --------------------------------

    @property
    def values(self) -> dict[str, JsonValue]:
        """The devices' current values (the engine's)."""
        return self.engine.values

    def prime(self, values: Mapping[str, JsonValue]) -> None:
        """The devices' values at start-up, before any session."""
        self.engine.prime(values)

    def on_input(self, name: str, value: JsonValue, observed_at: float) -> None:
        """An input or sensor changed (through the engine, which also runs its follows)."""
        self.engine.on_input(name, value, observed_at)

    # -- what the device core tells this link --------------------------------------------------

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        """A device value changed: persist it, then schedule a coalesced report."""
        change = Change(name, value, observed_at, event=name in self._event_devices)
        if self._writer is not None:
            self._writer.accept(change)
        else:
            self.on_persisted([change])
        log.debug("input_changed", device=name, value=value)

    def on_failsafe(self, name: str) -> None:
        """Desired values set before now (cloud clock) are not applied again after the outage."""
        cutoff = self._last_cloud_time if self._last_cloud_time is not None else self._clock()
        self._failsafed.remember(name, cutoff)

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        """A desired value held back by min_interval is on the device now: report (and clear)
        it like any applied desired value; without a session the next fetch reconciles it."""
        version = self._deferred_versions.pop(name, self.reconciler.newest_version)
        if self._stopping or not self.connected:
            return
        log.info("desired_applied", device=name, value=value, version=version)
        self.counters["deltas_applied"] += 1
        plan = DeltaPlan(version=version, apply={name: True})  # only the key counts here
        update = self.reconciler.build_update(
            plan,
            {name: value},
            clear_desired=self._shadow.clear_desired,
            timestamp_ms=self._timestamp(None),
        )
        if update is not None:
            self._enqueue_update(update)

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """Set ``reported.gateway.<key>`` now (if connected) and in every full report."""
        if self.gateway_status.get(key) == value and key in self.gateway_status:
            return
        self.gateway_status[key] = value
        if self.connected and not self._stopping:
            self._enqueue_update(ShadowUpdate(reported={GATEWAY_KEY: {key: value}}))

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
        await session.publish(self._status_topic, b"online", qos=1, retain=True)
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
                        self.events.run(session, self.thing, self._events_topic),
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
                await session.publish(self._status_topic, b"offline", qos=1, retain=True)
        finally:
            self.connected = False
            self._abandon_requests()
            self.engine.link_down(failsafe=not self._stopping)

    def _reset_session(self) -> None:
        self._stopping = False
        self._first_get_in_session = True
        self.protocol.start_session()
        self.reporter.start_session()

    def _abandon_requests(self) -> None:
        """The session is gone: keep every unacknowledged input change for the next one."""
        for request in self.protocol.abandon():
            self.reporter.put_back(request.batch, request.observed_at)

    async def _final_report(self) -> None:
        """On shutdown: stop taking deltas, report the final state and wait briefly for it."""
        self._stopping = True
        batch, observed_at = self.reporter.take()
        request = self._enqueue_update(
            ShadowUpdate(reported=self._full_reported(), timestamp_ms=self._timestamp(observed_at)),
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

    def handle_message(self, message: InboundMessage) -> None:
        kind = self.topics.classify(message.topic)
        if kind is None:
            return
        try:
            reply = parse_reply(kind, message.payload)
        except PayloadError as exc:
            self.counters["messages_dropped"] += 1
            log.warning("payload_dropped", topic=message.topic, reason=exc.reason, shape=exc.shape)
            return
        if isinstance(reply.timestamp, int | float):
            self._last_cloud_time = float(reply.timestamp)
        if isinstance(reply, DeltaMessage):
            self._on_delta(reply)
        elif isinstance(reply, ShadowDocument):
            self._on_document(reply)
        elif isinstance(reply, UpdateAccepted):
            self._on_update_accepted(reply)
        elif isinstance(reply, ErrorReply):
            self.protocol.on_rejected(kind, reply)

    def _on_delta(self, delta: DeltaMessage) -> None:
        if self._stopping:
            return
        plan = self.reconciler.plan(delta.state, delta.version)
        if plan.stale:
            self.counters["deltas_stale"] += 1
            log.info(
                "delta_ignored_stale", version=delta.version, newest=self.reconciler.newest_version
            )
            # The document decides: it resets the version floor (should a forged or replayed
            # delta have raised it) and carries whatever this delta wanted, if still desired.
            self.protocol.request_get()
            return
        if self._failsafed:
            caused_by_us = self.protocol.is_ours(delta.client_token)
            plan, held = self._failsafed.filter_delta(plan, caused_by_us=caused_by_us)
            _log_held(held)
        self._apply_and_report(plan, extra_reported=None)

    def _on_document(self, document: ShadowDocument) -> None:
        if self.protocol.answered(document.client_token) is None:
            return  # somebody else's get: not ours to trust
        self.reconciler.observe_document(document.version)
        if self._stopping:
            return
        reported = document.state.reported or {}
        if not self._restored:
            self._restore_outputs(reported, document.state.delta or {})
        plan = self.reconciler.plan(
            document.state.delta or {}, document.version, from_document=True
        )
        if self._failsafed:
            plan, held = self._failsafed.filter_document(plan, document.desired_timestamp)
            _log_held(held)
        if self._first_get_in_session:
            # After every connect, report everything: changes made while offline catch up.
            self._first_get_in_session = False
            extra = self._full_reported(
                stale_errors=error_names(reported), stale_unknown=has_unknown_summary(reported)
            )
        else:
            extra = drift(self.values, self.reconciler, reported)
            if extra:
                log.info("reported_drift_corrected", keys=sorted(extra))
        self._apply_and_report(plan, extra_reported=extra or None)
        self.synced.set()

    def _restore_outputs(self, reported: Mapping[str, Any], delta: Mapping[str, Any]) -> None:
        self._restored = True
        # A pending desired value wins over restoring the old reported one.
        names = [name for name in self._restore if name not in delta]
        self.engine.restore(self.reconciler.restore_plan(reported, names))

    def _apply_and_report(
        self, plan: DeltaPlan, extra_reported: dict[str, JsonValue] | None
    ) -> None:
        outcome = self.engine.apply(plan.apply)
        for name in outcome.deferred:
            self._deferred_versions[name] = plan.version
        applied = outcome.applied
        refused = {name: self.reconciler.reason(why) for name, why in outcome.refused.items()}
        plan = plan.outcome(applied, refused)
        for name, shown in applied.items():
            log.info("desired_applied", device=name, value=shown, version=plan.version)
        for name, reason in plan.rejected.items():
            log.warning("desired_rejected", device=name, reason=reason, version=plan.version)
        if plan.unknown:
            # One line however many keys: a desired document full of junk must not flood logs.
            log.warning(
                "desired_unknown_keys",
                count=len(plan.unknown),
                names=[name[:64] for name in plan.unknown[:10]],
                version=plan.version,
            )
        self.counters["deltas_applied"] += len(applied)
        self.counters["deltas_rejected"] += len(plan.rejected) + len(plan.unknown)
        update = self.reconciler.build_update(
            plan,
            applied,
            clear_desired=self._shadow.clear_desired,
            timestamp_ms=self._timestamp(None),
            extra_reported=extra_reported,
        )
        if update is not None:
            self._enqueue_update(update)

    def _on_update_accepted(self, accepted: UpdateAccepted) -> None:
        request = self.protocol.answered(accepted.client_token)
        if request is not None:
            self.reconciler.observe_version(accepted.version)  # only our own: trusted
            if request.batch and self._writer is not None:
                self._writer.delivered(request.batch)  # the outbox may forget these now

    # -- what the protocol tells the sync ---------------------------------------------------------

    def on_no_shadow(self) -> None:
        """No shadow yet: create it by reporting the devices' current state."""
        log.info("shadow_created", reason="get returned 404")
        self._first_get_in_session = False
        self._enqueue_update(ShadowUpdate(reported=self._full_reported()))
        self.synced.set()

    def on_not_accepted(self, request: ShadowRequest) -> None:
        """An update that will not be retried as it is: its input changes go out again."""
        self.reporter.put_back(request.batch, request.observed_at)

    def _enqueue_update(
        self,
        update: ShadowUpdate,
        *,
        batch: dict[str, JsonValue] | None = None,
        observed_at: float | None = None,
    ) -> ShadowRequest:
        return self.protocol.enqueue_update(update, batch=batch, observed_at=observed_at)

    def _send_batch(self, batch: dict[str, JsonValue], observed_at: float | None) -> None:
        update = ShadowUpdate(reported=dict(batch), timestamp_ms=self._timestamp(observed_at))
        self._enqueue_update(update, batch=batch, observed_at=observed_at)

    def _full_reported(
        self, stale_errors: frozenset[str] = frozenset(), *, stale_unknown: bool = False
    ) -> dict[str, JsonValue]:
        return full_reported(
            self.values,
            self.reconciler,
            self.gateway_status,
            stale_errors=stale_errors,
            stale_unknown=stale_unknown,
        )

    def _timestamp(self, observed_at: float | None) -> int | None:
        if not self._shadow.send_timestamp:
            return None
        return int((observed_at if observed_at is not None else self._clock()) * 1000)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "synced": self.synced.is_set(),
            "thing": self.thing,
            "shadow": self._shadow.name,
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


def _log_held(names: list[str]) -> None:
    for name in names:
        log.info("stale_desired_not_reapplied", device=name, reason="fail-safe value kept")
