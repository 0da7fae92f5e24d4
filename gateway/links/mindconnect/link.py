"""The MindConnect link: every device value out as a time series point, commands in.

What the device core tells this link (an input or sensor changed, the engine moved an output)
becomes one point with its observation time, persisted in the link's own durable outbox
(``state_dir/mindconnect-outbox.sqlite3``, the ``Outbox`` class with its ``events`` table: one
row per point, in order, kept until the broker acknowledged it) by an ``OutboxWriter`` task of
its own. Outputs set through another link (a shadow delta) are told to this link by the device
core as changes, stamped with the time they were applied; nothing polls. Once the outbox is
open, every device's value not sent yet goes out (the values at start).

Per session: the command reader, and the sender, which publishes (QoS 1) everything that waits
as time series messages up to ``max_message_bytes`` (and the events of devices with
``events: true``), acknowledges it in the outbox, and waits ``publish_interval`` before the
next round, so a burst of changes goes out as one message. An outage, a crash or kill -9 loses
nothing: what was not acknowledged is sent at the next connection, in order.

A set command goes through ``DeviceCore.apply`` (interlocks, minimum intervals, follows) after
the device's codec checked the value exactly as a shadow delta's; it is answered ``EXECUTED``
or ``FAILED`` with the reason, or ``EXECUTING`` first when the output's minimum interval holds
it back (``EXECUTED`` follows once it is applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.core.jsonlimits import json_equal
from gateway.core.outbox import Change, Event, Outbox, OutboxWriter
from gateway.core.ports import Clock, DeviceCore, MqttSession
from gateway.core.values import JsonValue, ValueCodec
from gateway.errors import GatewayError
from gateway.links.mindconnect.commands import Dropped, Refused, SetCommand, parse_command
from gateway.links.mindconnect.payloads import (
    BASE_EVENT_TYPE,
    Batch,
    Topics,
    command_status,
    events_message,
    timeseries_batches,
    value_text,
)

log = structlog.get_logger()

# Siemens documents no message size for its broker; messages are kept within 128 KiB (AWS IoT
# Core's limit, which the dev cloud's MindConnect side enforces too).
MAX_MESSAGE_BYTES = 128 * 1024
ROWS_PER_ROUND = 500  # outbox rows read per round (several messages if they need it)
FINAL_FLUSH_TIMEOUT_S = 2.0  # at a clean stop; what is not sent by then waits in the outbox
EXECUTED, FAILED, EXECUTING = "EXECUTED", "FAILED", "EXECUTING"


@dataclass(frozen=True)
class MindConnectSettings:
    tenant: str
    codecs: Mapping[str, ValueCodec]
    datapoints: Mapping[str, str] = field(default_factory=dict)  # device -> dataPointId
    event_devices: frozenset[str] = frozenset()
    publish_interval_s: float = 1.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    event_type: str = BASE_EVENT_TYPE


@dataclass(frozen=True)
class _Job:
    request_id: str
    job_id: Any


class MindConnectLink:
    """The ``CloudLink`` of Insights Hub; the client id is known once the connector read the
    agent certificate (``set_client_id``)."""

    def __init__(
        self,
        settings: MindConnectSettings,
        *,
        core: DeviceCore,
        outbox: Outbox,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.core = core
        self.outbox = outbox
        self.writer = OutboxWriter(outbox, self._on_persisted)
        self.connected = False
        self.client_id = ""
        self.topics: Topics | None = None
        self._clock = clock
        self._monotonic = monotonic
        self._opened = asyncio.Event()
        self._wake = asyncio.Event()
        self._responses: deque[bytes] = deque(maxlen=1000)
        self._waiting_jobs: dict[str, _Job] = {}  # output -> command held back by min_interval
        self._last_seen: dict[str, JsonValue] = {}
        self.last_publish_at: float | None = None
        self.counters = {
            "points_sent": 0,
            "points_dropped": 0,
            "events_sent": 0,
            "messages_published": 0,
            "commands_executed": 0,
            "commands_failed": 0,
            "commands_dropped": 0,
        }
        core.add_listener(self)

    def set_client_id(self, client_id: str) -> None:
        self.client_id = client_id
        self.topics = Topics(self.settings.tenant, client_id)

    # -- what the device core tells this link (on the loop's thread) -------------------------

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        self._point(name, value, observed_at)

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        self._point(name, value, self._clock())
        job = self._waiting_jobs.pop(name, None)
        if job is not None:
            self._answer(job, EXECUTED, f"set {name} to {value_text(value)}")

    def on_deferred_dropped(self, name: str, reason: str) -> None:
        job = self._waiting_jobs.pop(name, None)
        if job is not None:
            self._answer(job, FAILED, f"{name}: {reason}")

    def on_failsafe(self, name: str) -> None:
        """Nothing to do: the fail-safe value arrives as a change next."""

    def _point(self, name: str, value: JsonValue, observed_at: float) -> None:
        self._last_seen[name] = value
        self.writer.accept(Change(name, value, observed_at, event=True))

    def _on_persisted(self, changes: list[Change]) -> None:
        self._wake.set()

    # -- tasks beside the sessions -----------------------------------------------------------

    async def run_outbox(self, *, first_values: bool = False) -> None:
        """Open the outbox (then, with ``first_values``, queue every device's value not sent
        yet), then persist every point; at the end store what waits, close."""
        await asyncio.to_thread(self.outbox.open)
        self._opened.set()
        if first_values:
            self.notice_changes()
        try:
            await self.writer.run()
        finally:
            await asyncio.to_thread(self.writer.drain)
            await asyncio.to_thread(self.outbox.close)

    def notice_changes(self) -> None:
        """Queue every device value that differs from the last one this link sent (at start:
        all of them); later changes are told by the device core."""
        now = self._clock()
        for name, value in list(self.core.values.items()):
            if name not in self._last_seen or not json_equal(self._last_seen[name], value):
                self._point(name, value, now)

    # -- one session ----------------------------------------------------------------------------

    async def run_session(self, session: MqttSession, stop: asyncio.Event) -> None:
        if self.topics is None:
            raise GatewayError("the MindConnect link has no client id (connector not prepared)")
        topics = self.topics
        await session.subscribe([topics.commands])
        self.connected = True
        self.core.link_up()
        log.info("mindconnect_connected", client_id=self.client_id)
        clean = False
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(session), name="mindconnect_reader")
                relay = group.create_task(self._relay(stop), name="mindconnect_stop_relay")
                await self._send(session, stop)
                reader.cancel()
                relay.cancel()
            clean = True
        finally:
            self.connected = False
            self.core.link_down(failsafe=not clean)
            log.info("mindconnect_session_ended", client_id=self.client_id, clean=clean)

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _read(self, session: MqttSession) -> None:
        async for message in session.messages():
            if self.topics is not None and message.topic == self.topics.commands:
                self.handle_command(message.payload)

    async def _send(self, session: MqttSession, stop: asyncio.Event) -> None:
        await self._opened.wait()
        last_round = -float("inf")
        while True:
            if stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FINAL_FLUSH_TIMEOUT_S):
                        await self._round(session)
                return
            self._wake.clear()
            await self._round(session)
            last_round = self._monotonic()
            await self._wake.wait()
            # Coalescing: what arrives within the interval goes out in the next round.
            remaining = last_round + self.settings.publish_interval_s - self._monotonic()
            if remaining > 0 and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await stop.wait()

    async def _round(self, session: MqttSession) -> None:
        """Publish the command answers, then every waiting point, oldest first."""
        assert self.topics is not None
        while self._responses:
            await session.publish(self.topics.command_status, self._responses[0], qos=1)
            self._responses.popleft()
            self._published()
        while True:
            rows = await asyncio.to_thread(self.outbox.next_events, ROWS_PER_ROUND)
            if not rows:
                return
            await self._publish_points(session, rows)
            if len(rows) < ROWS_PER_ROUND:
                return

    async def _publish_points(self, session: MqttSession, rows: list[Event]) -> None:
        assert self.topics is not None
        settings = self.settings
        for item in timeseries_batches(rows, settings.datapoints, settings.max_message_bytes):
            if isinstance(item, Batch):
                await session.publish(self.topics.timeseries, item.payload, qos=1)
                self._published()
                self.counters["points_sent"] += len(item.points)
                events = [p for p in item.points if p.device in settings.event_devices]
                if events:
                    payload = events_message(
                        events, settings.datapoints, self.client_id, settings.event_type
                    )
                    await session.publish(self.topics.events, payload, qos=1)
                    self._published()
                    self.counters["events_sent"] += len(events)
                await asyncio.to_thread(self.outbox.ack_events, item.points)
                log.debug("mindconnect_points_published", points=len(item.points))
            else:
                self.counters["points_dropped"] += 1
                log.warning(
                    "mindconnect_point_dropped",
                    device=item.device,
                    reason=f"larger than {settings.max_message_bytes} bytes alone",
                )
                await asyncio.to_thread(self.outbox.ack_events, [item])

    def _published(self) -> None:
        self.counters["messages_published"] += 1
        self.last_publish_at = self._clock()

    # -- commands -------------------------------------------------------------------------------

    def handle_command(self, payload: bytes) -> None:
        """Carry out one command and queue its answer; never raises for a bad message."""
        parsed = parse_command(payload)
        if isinstance(parsed, Dropped):
            self.counters["commands_dropped"] += 1
            log.warning("mindconnect_command_dropped", reason=parsed.reason, shape=parsed.shape)
            return
        job = _Job(parsed.request_id, parsed.job_id)
        if isinstance(parsed, Refused):
            self._answer(job, FAILED, parsed.reason)
            return
        try:
            self._execute(job, parsed)
        except Exception as exc:  # a command must never end the session: answer, log, go on
            log.error("mindconnect_command_error", error=type(exc).__name__)
            self._answer(job, FAILED, f"{parsed.device[:64]}: internal error")

    def _execute(self, job: _Job, command: SetCommand) -> None:
        name = command.device
        codec = self.settings.codecs.get(name)
        if codec is None:
            self._answer(job, FAILED, f"unknown device {name[:64]!r}")
            return
        try:
            native = codec.parse_desired(command.value)
        except GatewayError as exc:
            self._answer(job, FAILED, f"{name}: {exc}")
            return
        # Named as the origin: this link answers from the outcome, the other links hear it.
        outcome = self.core.apply({name: native}, origin=self)
        if name in outcome.refused:
            self._answer(job, FAILED, f"{name}: {outcome.refused[name]}")
        elif name in outcome.deferred:
            superseded = self._waiting_jobs.pop(name, None)
            if superseded is not None:
                self._answer(superseded, FAILED, f"{name}: superseded by a newer command")
            self._waiting_jobs[name] = job
            self._answer(job, EXECUTING, f"{name}: held back by its minimum interval")
        else:
            now = self._clock()
            for applied, shown in outcome.applied.items():
                self._point(applied, shown, now)
            shown = outcome.applied.get(name)
            self._answer(job, EXECUTED, f"set {name} to {value_text(shown)}")

    def _answer(self, job: _Job, status: str, message: str) -> None:
        if status == EXECUTED:
            self.counters["commands_executed"] += 1
        elif status == FAILED:
            self.counters["commands_failed"] += 1
        log.info(
            "mindconnect_command_answered",
            request_id=job.request_id[:64],
            status=status,
            message=message,
        )
        self._responses.append(
            command_status(
                response_id=str(uuid.uuid4()),
                request_id=job.request_id,
                job_id=job.job_id,
                status=status,
                message=message,
                at=self._clock(),
            )
        )
        self._wake.set()

    # -- CloudLink --------------------------------------------------------------------------------

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """Insights Hub has no place for the gateway's own status (OTA, certificate expiry)."""

    def status(self) -> dict[str, Any]:
        depth = self.outbox.depth()
        return {
            "connected": self.connected,
            "client_id": self.client_id,
            "last_publish_at": self.last_publish_at,
            "queue_depth": depth.get("events", 0),
            "dropped_points": depth.get("dropped_events", 0) + self.counters["points_dropped"],
            "outbox_in_memory": self.outbox.degraded,
            **{k: v for k, v in self.counters.items() if k != "points_dropped"},
        }
