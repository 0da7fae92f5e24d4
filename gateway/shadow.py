"""Keeps the devices and the thing's shadow in sync over one MQTT session at a time.

The sync half of the shadow link: a delta or a fetched document becomes a plan (``reconcile``),
the device core applies it, and one update answers it. Per session four named tasks share one
``TaskGroup``: the reader (replies and deltas, applied synchronously so a relay follows the
shadow within milliseconds), the protocol (``shadow_protocol``: requests on the wire, limits,
expiry, retries), the reporter (device changes coalesced to at most one update per 50 ms) and
the event publisher (the outbox's events, in order).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import structlog

from gateway import __version__
from gateway.config import ShadowConfig
from gateway.engine import DeviceEngine
from gateway.messages import (
    DeltaMessage,
    ErrorReply,
    PayloadError,
    ShadowDocument,
    UpdateAccepted,
    parse_reply,
)
from gateway.outbox import Change, Outbox, OutboxWriter
from gateway.ports import Clock, DeviceBank, InboundMessage, MqttSession
from gateway.reconcile import (
    GATEWAY_KEY,
    MAX_ERROR_REASON_CHARS,
    UNKNOWN_KEYS_KEY,
    Coalescer,
    DeltaPlan,
    Reconciler,
    ShadowUpdate,
)
from gateway.rules import Behaviours
from gateway.shadow_protocol import ShadowProtocol, ShadowRequest
from gateway.topics import ShadowTopics
from gateway.values import JsonValue, ValueCodec

log = structlog.get_logger()

REPORT_INTERVAL_S = 0.05  # coalesce input bursts to one update per 50 ms
FINAL_REPORT_TIMEOUT_S = 2.0
EVENT_BATCH = 100  # events per message: in order, far below the 128 KB payload limit
# Stale error entries cleared per full report (a bound on the update's size).
MAX_STALE_ERRORS_CLEARED = 500


class ShadowSync:
    """The shadow side of the gateway: owns the reconciler and the last known values."""

    def __init__(
        self,
        *,
        thing: str,
        shadow: ShadowConfig,
        bank: DeviceBank,
        codecs: Mapping[str, ValueCodec],
        restore: frozenset[str] = frozenset(),
        outbox: Outbox | None = None,
        writer: OutboxWriter | None = None,
        event_devices: frozenset[str] = frozenset(),
        events_topic: str | None = None,
        status_topic: str | None = None,
        min_intervals_s: Mapping[str, float] | None = None,
        behaviours: Behaviours | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        engine: DeviceEngine | None = None,
        error_reason_chars: int = MAX_ERROR_REASON_CHARS,
    ) -> None:
        # The device core; built here only when the caller (a unit test) did not pass one.
        self.engine = engine or DeviceEngine(
            bank=bank,
            codecs=codecs,
            behaviours=behaviours,
            min_intervals_s=min_intervals_s,
            clock=clock,
            monotonic=monotonic,
        )
        self.engine.add_listener(self)
        self._clock = clock
        self._monotonic = monotonic
        self._coalescer = Coalescer(REPORT_INTERVAL_S)
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
        self._report_wake = asyncio.Event()
        self._outbox = outbox if outbox is not None else Outbox(None)
        # Accepted input changes reach the reporter only once the writer has them on disk.
        self._writer = writer
        # Extra entries of reported.gateway (e.g. ota, cert_expires), set by other services.
        self.gateway_status: dict[str, JsonValue] = {}
        self._events_wake = asyncio.Event()
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
        self._failsafed: dict[str, float] = {}  # name -> cloud time after which desired is fresh
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
        self._failsafed[name] = cutoff

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

    def _hold_failsafe_against_own_deltas(self, delta: DeltaMessage, plan: DeltaPlan) -> None:
        """A delta our own report caused (it carries our clientToken) only repeats the desired
        value from before the outage: the fail-safe value holds. Anyone else's is fresh."""
        caused_by_us = self.protocol.is_ours(delta.client_token)
        for name in [name for name in plan.apply if name in self._failsafed]:
            if caused_by_us:
                del plan.apply[name]
                log.info("stale_desired_not_reapplied", device=name, reason="fail-safe value kept")
            else:
                del self._failsafed[name]

    def _drop_stale_after_failsafe(self, document: ShadowDocument, plan: DeltaPlan) -> None:
        """After a fail-safe, a desired value older than the outage is not applied again."""
        for name in [name for name in plan.apply if name in self._failsafed]:
            stamp = document.desired_timestamp(name)
            if stamp is not None and stamp > self._failsafed[name]:
                del self._failsafed[name]  # set during the outage: fresh
                continue
            del plan.apply[name]
            log.info("stale_desired_not_reapplied", device=name, reason="fail-safe value kept")

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """Set ``reported.gateway.<key>`` now (if connected) and in every full report."""
        if self.gateway_status.get(key) == value and key in self.gateway_status:
            return
        self.gateway_status[key] = value
        if self.connected and not self._stopping:
            self._enqueue_update(ShadowUpdate(reported={GATEWAY_KEY: {key: value}}))

    def on_persisted(self, changes: list[Change]) -> None:
        """Changes are durable: report them (coalesced) and publish their events."""
        for change in changes:
            self._coalescer.add(change.device, change.value, change.observed_at)
        self._report_wake.set()
        if any(change.event for change in changes):
            self._events_wake.set()

    def recover(self) -> None:
        """At start: what the outbox kept from before a crash goes out on the first session."""
        for name, (value, observed_at) in self._outbox.pending_reported().items():
            self._coalescer.add(name, value, observed_at)
        if self._coalescer.pending:
            log.info("outbox_recovered", **self._outbox.depth())

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
                    group.create_task(self._report_loop(), name="shadow_reporter"),
                    group.create_task(self._event_loop(session), name="event_publisher"),
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
        if self._coalescer.pending:
            self._report_wake.set()  # changes kept from the last session go out first thing

    def _abandon_requests(self) -> None:
        """The session is gone: keep every unacknowledged input change for the next one."""
        for request in self.protocol.abandon():
            if request.batch:
                self._coalescer.put_back(request.batch, request.observed_at)

    async def _final_report(self) -> None:
        """On shutdown: stop taking deltas, report the final state and wait briefly for it."""
        self._stopping = True
        batch, observed_at = self._coalescer.take(self._monotonic())
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
            self._hold_failsafe_against_own_deltas(delta, plan)
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
            self._drop_stale_after_failsafe(document, plan)
        if self._first_get_in_session:
            # After every connect, report everything: changes made while offline catch up.
            self._first_get_in_session = False
            status = reported.get(GATEWAY_KEY)
            extra = self._full_reported(
                stale_errors=_error_names(reported),
                stale_unknown=isinstance(status, dict) and UNKNOWN_KEYS_KEY in status,
            )
        else:
            extra = self._drift(reported)
        self._apply_and_report(plan, extra_reported=extra or None)
        self.synced.set()

    def _drift(self, reported: Mapping[str, Any]) -> dict[str, JsonValue]:
        """What the fetched document's ``reported`` shows wrongly: device values (a report lost,
        or overtaken by a desired write) and error entries (an error clear lost with a 409).
        Reported again, so pins, errors and shadow converge."""
        drift: dict[str, JsonValue] = {
            name: value
            for name, value in self.values.items()
            if not _json_equal(reported.get(name), value)
        }
        status = reported.get(GATEWAY_KEY)
        shown = status.get("errors") if isinstance(status, dict) else None
        shown_errors: Mapping[str, Any] = shown if isinstance(shown, dict) else {}
        errors: dict[str, JsonValue] = dict.fromkeys(
            sorted(shown_errors.keys() - self.reconciler.errors.keys())[:MAX_STALE_ERRORS_CLEARED]
        )
        errors.update(
            (name, reason)
            for name, reason in self.reconciler.errors.items()
            if shown_errors.get(name) != reason
        )
        section: dict[str, JsonValue] = {}
        if errors:
            section["errors"] = errors
        summary = self.reconciler.unknown_summary()
        shown_unknown = status.get(UNKNOWN_KEYS_KEY) if isinstance(status, dict) else None
        if not _json_equal(shown_unknown, summary):
            section[UNKNOWN_KEYS_KEY] = summary
        if section:
            drift[GATEWAY_KEY] = section
        if drift:
            log.info("reported_drift_corrected", keys=sorted(drift))
        return drift

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
        plan.rejected.update(
            (name, self.reconciler.reason(reason)) for name, reason in outcome.refused.items()
        )
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
        applied_plan = DeltaPlan(
            version=plan.version,
            apply={name: plan.apply[name] for name in applied},
            rejected=plan.rejected,
            unknown=plan.unknown,
        )
        update = self.reconciler.build_update(
            applied_plan,
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
        if request.batch:
            self._coalescer.put_back(request.batch, request.observed_at)
            self._report_wake.set()

    def _enqueue_update(
        self,
        update: ShadowUpdate,
        *,
        batch: dict[str, JsonValue] | None = None,
        observed_at: float | None = None,
    ) -> ShadowRequest:
        return self.protocol.enqueue_update(update, batch=batch, observed_at=observed_at)

    # -- events ---------------------------------------------------------------------------------

    async def _event_loop(self, session: MqttSession) -> None:
        """Publish queued events in order, at least once; delete each batch after its PUBACK."""
        while True:
            events = await asyncio.to_thread(self._outbox.next_events, EVENT_BATCH)
            if not events:
                self._events_wake.clear()
                await self._events_wake.wait()
                continue
            body = {"thing": self.thing, "events": [event.to_json() for event in events]}
            payload = json.dumps(body, separators=(",", ":")).encode()
            await session.publish(self._events_topic, payload, qos=1)
            await asyncio.to_thread(self._outbox.ack_events, events)
            self.counters["events_published"] = self.counters.get("events_published", 0) + len(
                events
            )

    # -- reporting ------------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        while True:
            await self._report_wake.wait()
            self._report_wake.clear()
            due = self._coalescer.due_in(self._monotonic())
            if due is None:
                continue
            if due > 0:
                await asyncio.sleep(due)
            batch, observed_at = self._coalescer.take(self._monotonic())
            if not batch:
                continue
            update = ShadowUpdate(reported=dict(batch), timestamp_ms=self._timestamp(observed_at))
            self._enqueue_update(update, batch=batch, observed_at=observed_at)
            if self._coalescer.pending:
                self._report_wake.set()

    def _full_reported(
        self, stale_errors: frozenset[str] = frozenset(), *, stale_unknown: bool = False
    ) -> dict[str, JsonValue]:
        stale = sorted(stale_errors - self.reconciler.errors.keys())[:MAX_STALE_ERRORS_CLEARED]
        errors: dict[str, str | None] = dict.fromkeys(stale)
        errors.update(self.reconciler.errors)
        status: dict[str, JsonValue] = {**self.gateway_status, "version": __version__}
        if errors:
            status["errors"] = dict(errors)
        _, unknown = self.reconciler.unknown_change()
        if unknown is not None or stale_unknown:
            status[UNKNOWN_KEYS_KEY] = unknown
        return {**self.values, GATEWAY_KEY: status}

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
            "counters": dict(self.counters),
            "in_flight": self.protocol.in_flight,
            "queued": self.protocol.queued,
            "outbox": self._outbox.depth(),
        }


def _json_equal(a: object, b: object) -> bool:
    """Equal as JSON values: true is not 1, but 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _error_names(reported: Mapping[str, Any]) -> frozenset[str]:
    status = reported.get(GATEWAY_KEY)
    errors = status.get("errors") if isinstance(status, dict) else None
    return frozenset(errors) if isinstance(errors, dict) else frozenset()
