"""Shadow service replies, validated into typed frozen models as soon as they arrive.

A payload that is too large, too deeply nested, not JSON or not shaped like the reply it
claims to be raises ``PayloadError``; the caller logs it and drops it without touching a pin.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class _Reply(BaseModel):
    # AWS may add fields; unknown ones are ignored, the ones we use are checked.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    client_token: str | None = Field(default=None, alias="clientToken")
    timestamp: int | float | None = None


class DeltaMessage(_Reply):
    version: int = Field(ge=0)
    state: dict[str, Any]


class ShadowState(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    desired: dict[str, Any] | None = None
    reported: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None


class ShadowDocument(_Reply):
    """A get/accepted reply: the whole document."""

    version: int = Field(ge=0)
    state: ShadowState = ShadowState()
    metadata: dict[str, Any] | None = None

    def desired_timestamp(self, name: str) -> float | None:
        """When (cloud clock, epoch s) desired.<name> was last set, if the document says."""
        desired = (self.metadata or {}).get("desired")
        entry = desired.get(name) if isinstance(desired, dict) else None
        stamp = entry.get("timestamp") if isinstance(entry, dict) else None
        return float(stamp) if isinstance(stamp, int | float) else None


class UpdateAccepted(_Reply):
    version: int = Field(ge=0)
    # The request's state as accepted (AWS echoes it): null values are deletions.
    state: dict[str, Any] | None = None


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


def loads_bounded(payload: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Parse JSON after checking size and nesting; every failure is a ``PayloadError``."""
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {max_bytes}", "bytes")
    if nests_deeper_than(payload, max_depth):
        raise PayloadError(f"JSON nested deeper than {max_depth} levels", "deep")
    try:
        return json.loads(payload, parse_int=bounded_int)
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


_MODELS: dict[Reply, type[_Reply]] = {
    Reply.UPDATE_DELTA: DeltaMessage,
    Reply.UPDATE_ACCEPTED: UpdateAccepted,
    Reply.UPDATE_REJECTED: ErrorReply,
    Reply.GET_ACCEPTED: ShadowDocument,
    Reply.GET_REJECTED: ErrorReply,
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
    """Validate a reply payload into its model; raises ``PayloadError``."""
    data = decode(payload)
    if any(value_depth(section) > MAX_NESTING for section in _state_sections(kind, data)):
        raise PayloadError(f"JSON nested deeper than {MAX_NESTING} levels", "deep")
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise PayloadError(
            f"not a valid {kind.value} reply: {problems}", describe_shape(data)
        ) from exc
