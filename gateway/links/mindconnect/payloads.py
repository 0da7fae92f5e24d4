"""MindConnect MQTT messages, built and read here (pure: no I/O, no clock of its own).

Shapes, from Siemens' public sources:

- topics ``tc/<tenant>/<clientId>/...``: ``o/mc_v3/ts`` (time series), ``o/mc_v3/e`` (events),
  ``i/cmd_v3/c`` (commands in) and ``o/cmd_v3/u`` (command status out) - the sample client
  ``MindConnectClient.py`` of github.com/mindsphere/mindconnect-mqtt, and the MindConnect
  Async API samples for ``o/mc_v3/ts``;
- time series ``{"timeseries": [{"timestamp", "values": [{"dataPointId", "value",
  "qualityCode"}]}]}`` with the value and quality code as strings and the timestamp ISO 8601
  UTC with milliseconds and ``Z`` (Async API samples; the sample's ``example_json/
  timeseries.json``);
- events ``{"events": [{"id", "correlationId", "timestamp", "severity", "type",
  "description", "details"}]}`` (the sample's ``example_json/event.json``: ``id`` a UUID,
  ``correlationId`` its hex form, ``severity`` a string of 20/30/40);
- command status ``{"id", "requestId", "data": {"timestamp", "jobId", "status", "response":
  {"message"}}}`` (the sample's ``executeActuatorCommand``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.core.outbox import Event

QUALITY_GOOD = "0"  # the samples' quality code of a good value
# Severity of a device's change as an event: 40 is "information" in the sample's 20/30/40.
SEVERITY_INFORMATION = "40"
# The event type the sample derives its own from; a tenant may want its own (event_type).
BASE_EVENT_TYPE = "core.connectivity.event.type.AgentBaseEvent"
_COMPACT = (",", ":")
_ENVELOPE = len(b'{"timeseries":[]}')


class Topics:
    """The agent's topics under ``tc/<tenant>/<clientId>/``."""

    def __init__(self, tenant: str, client_id: str) -> None:
        base = f"tc/{tenant}/{client_id}"
        self.timeseries = f"{base}/o/mc_v3/ts"
        self.events = f"{base}/o/mc_v3/e"
        self.commands = f"{base}/i/cmd_v3/c"
        self.command_status = f"{base}/o/cmd_v3/u"


def timestamp(epoch_s: float) -> str:
    """``2026-12-01T18:04:45.123Z``: ISO 8601 UTC, milliseconds (truncated), ``Z``."""
    whole_ms = int(epoch_s * 1000)
    seconds, ms = divmod(whole_ms, 1000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"


def value_text(value: Any) -> str:
    """A device value as MindConnect's string: JSON's spelling (``true``, ``0.5``), a string
    as it is, a colour or a blink as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=_COMPACT)


def _entry(point: Event, datapoint: str) -> bytes:
    return json.dumps(
        {
            "timestamp": timestamp(point.observed_at),
            "values": [
                {
                    "dataPointId": datapoint,
                    "value": value_text(point.value),
                    "qualityCode": QUALITY_GOOD,
                }
            ],
        },
        separators=_COMPACT,
    ).encode()


@dataclass(frozen=True)
class Batch:
    """One time series message and the outbox rows it carries."""

    payload: bytes
    points: tuple[Event, ...]


def timeseries_batches(
    points: Iterable[Event], datapoints: Mapping[str, str], max_bytes: int
) -> Iterator[Batch | Event]:
    """The points as time series messages of at most ``max_bytes`` each, in order, one entry
    per point (a device may change twice within a message: both observations are kept). A
    point that alone would exceed ``max_bytes`` is yielded by itself (to be dropped, logged)."""
    entries: list[bytes] = []
    carried: list[Event] = []
    size = _ENVELOPE
    for point in points:
        entry = _entry(point, datapoints.get(point.device, point.device))
        extra = len(entry) + (1 if entries else 0)
        if entries and size + extra > max_bytes:
            yield Batch(_timeseries(entries), tuple(carried))
            entries, carried, size = [], [], _ENVELOPE
            extra = len(entry)
        if _ENVELOPE + len(entry) > max_bytes:
            yield point
            continue
        entries.append(entry)
        carried.append(point)
        size += extra
    if entries:
        yield Batch(_timeseries(entries), tuple(carried))


def _timeseries(entries: list[bytes]) -> bytes:
    return b'{"timeseries":[' + b",".join(entries) + b"]}"


def event_id(client_id: str, row_id: int) -> uuid.UUID:
    """The same id for the same outbox row every time: a message sent again after a crash
    is the same event, not a second one."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"mindconnect:{client_id}:{row_id}")


def events_message(
    points: Iterable[Event], datapoints: Mapping[str, str], client_id: str, event_type: str
) -> bytes:
    """The changes of devices with ``events: true`` as one events message."""
    events = []
    for point in points:
        ident = event_id(client_id, point.id)
        events.append(
            {
                "id": str(ident),
                "correlationId": ident.hex,
                "timestamp": timestamp(point.observed_at),
                "severity": SEVERITY_INFORMATION,
                "type": event_type,
                "description": (
                    f"{datapoints.get(point.device, point.device)} changed to "
                    f"{value_text(point.value)}"
                ),
                "details": {},
            }
        )
    return json.dumps({"events": events}, separators=_COMPACT).encode()


def command_status(
    *,
    response_id: str,
    request_id: str,
    job_id: Any,
    status: str,
    message: str,
    at: float,
) -> bytes:
    """The answer to a command on ``o/cmd_v3/u``."""
    return json.dumps(
        {
            "id": response_id,
            "requestId": request_id,
            "data": {
                "timestamp": timestamp(at),
                "jobId": job_id,
                "status": status,
                "response": {"message": message},
            },
        },
        separators=_COMPACT,
    ).encode()
