"""Shadow service replies, checked into typed frozen models as soon as they arrive.

A payload that is too large, too deeply nested, not JSON or not shaped like the reply it
claims to be raises ``PayloadError``; the caller logs it and drops it without touching a pin.

The five reply shapes are read by hand (one small function per kind) rather than by a schema
library: the daemon must fit its memory budget, and these are on the delta hot path. Field
names and types come from AWS's "Device Shadow service documents" and "Device Shadow MQTT
topics" pages (docs.aws.amazon.com/iot/latest/developerguide/device-shadow-document.html,
device-shadow-mqtt.html) and its SDKs' reply models (aws-iot-device-sdk-java-v2
``iotshadow.model``: ``version`` and ``code`` Integer, ``clientToken`` and ``message``
String, ``timestamp`` epoch seconds). What each field accepts, and why:

- ``version``: a JSON integer >= 0. Not a boolean, a string ("5") or a number written with a
  fraction or exponent (5.0): AWS always sends a plain integer, and a version that is not one
  did not come from the shadow service. (The pydantic models accepted all of these in lax mode.)
- ``timestamp``: absent, null or a finite JSON number (epoch seconds; AWS sends an integer).
  Not a boolean, a string, NaN or Infinity: the timestamp becomes the cloud clock that the
  fail-safe compares desired values against, where NaN or Infinity would misjudge every one.
- ``clientToken``: absent, null or a string. Only that key: ``client_token`` is no AWS field.
- ``state``/``metadata``: JSON objects (a delta's ``state`` required; a document's sections
  ``desired``/``reported``/``delta`` each an object or null).
- ``code``: a JSON integer (not a boolean or string); ``message``: a string, "" when absent.
- Every other field is ignored: AWS may add fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from gateway.core.jsonlimits import nests_deeper_than, value_depth
from gateway.errors import GatewayError
from gateway.links.shadow.topics import Reply

MAX_PAYLOAD_BYTES = 128 * 1024
MAX_NESTING = 6  # AWS's shadow limit for desired/reported sections
# A coarse bound before any model sees the payload: root, metadata, and the {"timestamp"} that
# replaces each leaf of a section in metadata. parse_reply then holds each state section (its
# own object included) to MAX_NESTING exactly, as the shadow service does.
_ENVELOPE_LEVELS = 3


class PayloadError(GatewayError):
    """An MQTT payload that cannot be used; ``shape`` describes it for the log."""

    def __init__(self, reason: str, shape: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.shape = shape


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reply:
    """What every reply may carry: the request's ``clientToken`` and when AWS sent it."""

    client_token: str | None = None
    timestamp: int | float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltaMessage(_Reply):
    version: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowState:
    desired: dict[str, Any] | None = None
    reported: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowDocument(_Reply):
    """A get/accepted reply: the whole document."""

    version: int
    state: ShadowState = ShadowState()
    metadata: dict[str, Any] | None = None

    def desired_timestamp(self, name: str) -> float | None:
        """When (cloud clock, epoch s) desired.<name> was last set, if the document says."""
        desired = (self.metadata or {}).get("desired")
        entry = desired.get(name) if isinstance(desired, dict) else None
        stamp = entry.get("timestamp") if isinstance(entry, dict) else None
        return float(stamp) if isinstance(stamp, int | float) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAccepted(_Reply):
    version: int
    # The request's state as accepted (AWS echoes it): null values are deletions.
    state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReply(_Reply):
    code: int
    message: str = ""


def describe_shape(value: object, *, depth: int = 2) -> str:
    """A short, value-free description of a JSON value, safe to log."""
    if isinstance(value, dict):
        if depth == 0:
            return "{...}"
        inner = ", ".join(
            f"{key}: {describe_shape(item, depth=depth - 1)}" for key, item in value.items()
        )
        return "{" + inner[:200] + "}"
    if isinstance(value, list):
        return f"list[{len(value)}]"
    return type(value).__name__


# JSON integers longer than this become floats: no device takes a value that large, and
# Python's int() of a long digit string is slow, and beyond 4,300 digits refused with ValueError.
MAX_INTEGER_DIGITS = 20


def bounded_int(text: str) -> int | float:
    """``parse_int`` for ``json.loads``: oversized integers become (possibly infinite) floats,
    which every range check refuses with a readable reason instead of an OverflowError."""
    if len(text) > MAX_INTEGER_DIGITS:
        return float(text)
    return int(text)


# Built once: json.loads with any option builds a new decoder (and its scanner) on every call,
# which on the delta hot path cost more than checking the reply's fields.
_DECODER = json.JSONDecoder(parse_int=bounded_int)


def loads_bounded(payload: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Parse JSON after checking size and nesting; every failure is a ``PayloadError``."""
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {max_bytes}", "bytes")
    if nests_deeper_than(payload, max_depth):
        raise PayloadError(f"JSON nested deeper than {max_depth} levels", "deep")
    try:
        # What json.loads does with bytes: UTF-8, -16 or -32, told apart as RFC 8259 says.
        text = payload.decode(json.detect_encoding(payload), "surrogatepass")
        return _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError; RecursionError cannot happen after the scan above,
        # but a parser failure of any kind must stay a dropped message.
        raise PayloadError(f"not valid JSON: {str(exc)[:120]}", "bytes") from exc


def decode(payload: bytes) -> dict[str, Any]:
    """Bytes to a JSON object, enforcing the size and nesting bounds before parsing."""
    data = loads_bounded(
        payload, max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_NESTING + _ENVELOPE_LEVELS
    )
    if not isinstance(data, dict):
        raise PayloadError("expected a JSON object", describe_shape(data))
    return data


_ABSENT: Final = object()
_NOT_AN_OBJECT: Final = "Input should be a valid dictionary"
_EMPTY_STATE: Final = ShadowState()


def _is_integer(value: object) -> TypeGuard[int]:
    # json.loads gives bool for true/false, and bool is an int subclass: not a number here.
    return isinstance(value, int) and not isinstance(value, bool)


class _Fields:
    """One JSON object of a reply, read field by field. A wrong field is noted (where it is and
    what is wrong, never its value) and read as a placeholder, so that one log line names every
    problem; ``parse_reply`` then refuses the whole reply."""

    __slots__ = ("_data", "_prefix", "problems")

    def __init__(self, data: dict[str, Any], problems: list[str], prefix: str = "") -> None:
        self._data = data
        self._prefix = prefix
        self.problems = problems

    def _wrong(self, name: str, what: str) -> None:
        self.problems.append(f"{self._prefix}{name}: {what}")

    def client_token(self) -> str | None:
        token = self._data.get("clientToken")
        if token is None or isinstance(token, str):
            return token
        self._wrong("clientToken", "Input should be a valid string")
        return None

    def timestamp(self) -> int | float | None:
        stamp = self._data.get("timestamp")
        if stamp is None or _is_integer(stamp):
            return stamp
        if isinstance(stamp, float) and math.isfinite(stamp):
            return stamp
        self._wrong("timestamp", "Input should be a finite number")
        return None

    def integer(self, name: str, *, minimum: int | None = None) -> int:
        value = self._data.get(name, _ABSENT)
        if value is _ABSENT:
            self._wrong(name, "Field required")
        elif not _is_integer(value):
            self._wrong(name, "Input should be a valid integer")
        elif minimum is not None and value < minimum:
            self._wrong(name, f"Input should be greater than or equal to {minimum}")
        else:
            return value
        return 0

    def text(self, name: str, *, default: str) -> str:
        value = self._data.get(name, default)
        if isinstance(value, str):
            return value
        self._wrong(name, "Input should be a valid string")
        return default

    def required_object(self, name: str) -> dict[str, Any]:
        value = self._data.get(name, _ABSENT)
        if isinstance(value, dict):
            return value
        self._wrong(name, "Field required" if value is _ABSENT else _NOT_AN_OBJECT)
        return {}

    def optional_object(self, name: str) -> dict[str, Any] | None:
        """An object, or None when the field is absent or null."""
        value = self._data.get(name)
        if value is None or isinstance(value, dict):
            return value
        self._wrong(name, _NOT_AN_OBJECT)
        return None

    def shadow_state(self) -> ShadowState:
        """A document's ``state``: absent is an empty state, anything but an object is wrong."""
        value = self._data.get("state", _ABSENT)
        if value is _ABSENT:
            return _EMPTY_STATE
        if not isinstance(value, dict):
            self._wrong("state", _NOT_AN_OBJECT)
            return _EMPTY_STATE
        sections = _Fields(value, self.problems, f"{self._prefix}state.")
        return ShadowState(
            desired=sections.optional_object("desired"),
            reported=sections.optional_object("reported"),
            delta=sections.optional_object("delta"),
        )


# One function per reply kind. Keyword arguments are evaluated in order, so the problems are
# listed in field order: clientToken, timestamp, then the kind's own fields.


def _delta(fields: _Fields) -> DeltaMessage:
    return DeltaMessage(
        client_token=fields.client_token(),
        timestamp=fields.timestamp(),
        version=fields.integer("version", minimum=0),
        state=fields.required_object("state"),
    )


def _document(fields: _Fields) -> ShadowDocument:
    return ShadowDocument(
        client_token=fields.client_token(),
        timestamp=fields.timestamp(),
        version=fields.integer("version", minimum=0),
        state=fields.shadow_state(),
        metadata=fields.optional_object("metadata"),
    )


def _update_accepted(fields: _Fields) -> UpdateAccepted:
    return UpdateAccepted(
        client_token=fields.client_token(),
        timestamp=fields.timestamp(),
        version=fields.integer("version", minimum=0),
        state=fields.optional_object("state"),
    )


def _error(fields: _Fields) -> ErrorReply:
    return ErrorReply(
        client_token=fields.client_token(),
        timestamp=fields.timestamp(),
        code=fields.integer("code"),
        message=fields.text("message", default=""),
    )


_PARSERS: dict[Reply, Callable[[_Fields], _Reply]] = {
    Reply.UPDATE_DELTA: _delta,
    Reply.UPDATE_ACCEPTED: _update_accepted,
    Reply.UPDATE_REJECTED: _error,
    Reply.GET_ACCEPTED: _document,
    Reply.GET_REJECTED: _error,
}


def _state_sections(kind: Reply, data: dict[str, Any]) -> list[object]:
    """The parts of a reply that hold the user's values: a delta's ``state`` is one section,
    a document's ``state`` holds up to three (desired, reported, delta)."""
    state = data.get("state")
    if kind is Reply.UPDATE_DELTA:
        return [state]
    if isinstance(state, dict):
        return [state.get(name) for name in ("desired", "reported", "delta")]
    return []


def parse_reply(kind: Reply, payload: bytes) -> _Reply:
    """Check a reply payload into its model; raises ``PayloadError``."""
    data = decode(payload)
    if any(value_depth(section) > MAX_NESTING for section in _state_sections(kind, data)):
        raise PayloadError(f"JSON nested deeper than {MAX_NESTING} levels", "deep")
    fields = _Fields(data, [])
    reply = _PARSERS[kind](fields)
    if fields.problems:
        problems = "; ".join(fields.problems[:3])
        raise PayloadError(f"not a valid {kind.value} reply: {problems}", describe_shape(data))
    return reply
