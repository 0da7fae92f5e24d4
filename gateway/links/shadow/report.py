"""What the shadow link reports: device changes coalesced, the full and the corrective
``reported`` sections, and the outbox's events published in order.

``Reporter`` batches durable device changes into at most one update per 50 ms (the newest
value per device wins; a batch the service did not accept goes back in). ``EventPublisher``
sends the outbox's events at least once and in order, deleting each batch after its PUBACK.
``full_reported`` and ``drift`` are pure: what every report after a connect says, and what a
fetched document's ``reported`` shows wrongly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gateway import __version__
from gateway.core.jsonlimits import json_equal
from gateway.core.outbox import Change, Outbox
from gateway.core.ports import Clock, MqttSession
from gateway.core.values import JsonValue
from gateway.links.shadow.reconcile import GATEWAY_KEY, UNKNOWN_KEYS_KEY, Coalescer, Reconciler

log = structlog.get_logger()

REPORT_INTERVAL_S = 0.05  # coalesce input bursts to one update per 50 ms
EVENT_BATCH = 100  # events per message: in order, far below the 128 KB payload limit
# Stale error entries cleared per report (a bound on the update's size).
MAX_STALE_ERRORS_CLEARED = 500

# Sends one batch of reported values: (values, newest observation time) -> queued.
SendBatch = Callable[[dict[str, JsonValue], float | None], None]


class Reporter:
    """Durable device changes, coalesced into reports."""

    def __init__(self, monotonic: Clock) -> None:
        self._monotonic = monotonic
        self._coalescer = Coalescer(REPORT_INTERVAL_S)
        self._wake = asyncio.Event()

    @property
    def pending(self) -> bool:
        return self._coalescer.pending

    def add(self, changes: list[Change]) -> None:
        for change in changes:
            self._coalescer.add(change.device, change.value, change.observed_at)
        self._wake.set()

    async def recover(self, outbox: Outbox) -> None:
        """At start: what the outbox kept from before a crash goes out on the first session
        (read in a thread: the SQLite read may wait for the writer's lock)."""
        pending = await asyncio.to_thread(outbox.pending_reported)
        for name, (value, observed_at) in pending.items():
            self._coalescer.add(name, value, observed_at)
        if self._coalescer.pending:
            log.info("outbox_recovered", **outbox.depth())

    def put_back(self, batch: Mapping[str, JsonValue], observed_at: float | None) -> None:
        """A batch that was not accepted: sent again (newer values already pending win)."""
        if batch:
            self._coalescer.put_back(batch, observed_at)
            self._wake.set()

    def start_session(self) -> None:
        if self._coalescer.pending:
            self._wake.set()  # changes kept from the last session go out first thing

    def take(self) -> tuple[dict[str, JsonValue], float | None]:
        """Everything pending, now (the final report)."""
        return self._coalescer.take(self._monotonic())

    async def run(self, send: SendBatch) -> None:
        """Hand a batch to ``send`` whenever one is due, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            due = self._coalescer.due_in(self._monotonic())
            if due is None:
                continue
            if due > 0:
                await asyncio.sleep(due)
            batch, observed_at = self._coalescer.take(self._monotonic())
            if batch:
                send(batch, observed_at)
            if self._coalescer.pending:
                self._wake.set()


class EventPublisher:
    """The outbox's events, published in order, at least once."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, session: MqttSession, thing: str, topic: str) -> None:
        """Publish queued events; delete each batch after its PUBACK; until cancelled."""
        while True:
            events = await asyncio.to_thread(self._outbox.next_events, EVENT_BATCH)
            if not events:
                self._wake.clear()
                await self._wake.wait()
                continue
            body = {"thing": thing, "events": [event.to_json() for event in events]}
            payload = json.dumps(body, separators=(",", ":")).encode()
            await session.publish(topic, payload, qos=1)
            await asyncio.to_thread(self._outbox.ack_events, events)
            self.published += len(events)


def full_reported(
    values: Mapping[str, JsonValue],
    reconciler: Reconciler,
    gateway_status: Mapping[str, JsonValue],
    *,
    stale_errors: frozenset[str] = frozenset(),
    stale_unknown: bool = False,
) -> dict[str, JsonValue]:
    """Every device value and the gateway's status; error entries of the last document that
    no longer hold are cleared (null), as is an unknown-key summary no longer true."""
    stale = sorted(stale_errors - reconciler.errors.keys())[:MAX_STALE_ERRORS_CLEARED]
    errors: dict[str, str | None] = dict.fromkeys(stale)
    errors.update(reconciler.errors)
    status: dict[str, JsonValue] = {**gateway_status, "version": __version__}
    if errors:
        status["errors"] = dict(errors)
    _, unknown = reconciler.unknown_change()
    if unknown is not None or stale_unknown:
        status[UNKNOWN_KEYS_KEY] = unknown
    return {**values, GATEWAY_KEY: status}


def drift(
    values: Mapping[str, JsonValue], reconciler: Reconciler, reported: Mapping[str, Any]
) -> dict[str, JsonValue]:
    """What a fetched document's ``reported`` shows wrongly: device values (a report lost,
    or overtaken by a desired write), error entries (a clear lost with a 409) and the
    unknown-key summary; reporting it again makes pins, errors and shadow converge."""
    wrong: dict[str, JsonValue] = {
        name: value for name, value in values.items() if not json_equal(reported.get(name), value)
    }
    status = reported.get(GATEWAY_KEY)
    shown_errors = _shown_errors(reported)
    stale = sorted(shown_errors.keys() - reconciler.errors.keys())[:MAX_STALE_ERRORS_CLEARED]
    errors: dict[str, JsonValue] = dict.fromkeys(stale)
    errors.update(
        (name, reason)
        for name, reason in reconciler.errors.items()
        if shown_errors.get(name) != reason
    )
    section: dict[str, JsonValue] = {}
    if errors:
        section["errors"] = errors
    summary = reconciler.unknown_summary()
    shown_unknown = status.get(UNKNOWN_KEYS_KEY) if isinstance(status, dict) else None
    if not json_equal(shown_unknown, summary):
        section[UNKNOWN_KEYS_KEY] = summary
    if section:
        wrong[GATEWAY_KEY] = section
    return wrong


def _shown_errors(reported: Mapping[str, Any]) -> Mapping[str, Any]:
    """A document's ``reported.gateway.errors`` (empty when absent or not an object)."""
    status = reported.get(GATEWAY_KEY)
    errors = status.get("errors") if isinstance(status, dict) else None
    return errors if isinstance(errors, dict) else {}


def error_names(reported: Mapping[str, Any]) -> frozenset[str]:
    """The device names a document's ``reported.gateway.errors`` holds."""
    return frozenset(_shown_errors(reported))


def has_unknown_summary(reported: Mapping[str, Any]) -> bool:
    status = reported.get(GATEWAY_KEY)
    return isinstance(status, dict) and UNKNOWN_KEYS_KEY in status
