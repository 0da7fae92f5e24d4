"""What the outbox holds (``Change``, ``Event``) and how its rows are read back from SQLite.

Text is read as bytes and decoded here: a value whose bytes were changed on disk is then one
unreadable row (``None``), not an error from the sqlite3 module that would hide every row. The
outbox's database and its salvage of a corrupt file both read through these functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The last accepted value of each reported name: name -> (value, observed_at).
PendingReported = dict[str, tuple[Any, float]]

SELECT_EVENTS = "SELECT id, CAST(device AS BLOB), CAST(value AS BLOB), observed_at FROM events"
SELECT_REPORTED = "SELECT rowid, CAST(name AS BLOB), CAST(value AS BLOB), observed_at FROM reported"


@dataclass(frozen=True)
class Change:
    """One accepted change of a device's value."""

    device: str
    value: Any
    observed_at: float
    event: bool = False  # also keep it as an event


@dataclass(frozen=True)
class Event:
    id: int
    device: str
    value: Any
    observed_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device,
            "value": self.value,
            "observed_at": self.observed_at,
        }


def event_from_row(row: tuple[Any, ...]) -> Event | None:
    """An event from a row of ``SELECT_EVENTS``; ``None`` if its bytes no longer decode."""
    event_id, device, raw, observed_at = row
    ok, value = _decode_value(raw)
    name = _decode_text(device)
    if not ok or name is None or not isinstance(event_id, int):
        return None
    if not isinstance(observed_at, int | float):
        return None
    return Event(event_id, name, value, float(observed_at))


def reported_from_row(row: tuple[Any, ...]) -> tuple[str, tuple[Any, float]] | None:
    """A name and its pending value from a row of ``SELECT_REPORTED``; ``None`` if unreadable."""
    _rowid, raw_name, raw, observed_at = row
    ok, value = _decode_value(raw)
    name = _decode_text(raw_name)
    if not ok or name is None or not isinstance(observed_at, int | float):
        return None
    return name, (value, float(observed_at))


def _decode_value(raw: Any) -> tuple[bool, Any]:
    if not isinstance(raw, bytes):
        return False, None
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


def _decode_text(raw: Any) -> str | None:
    if not isinstance(raw, bytes):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
