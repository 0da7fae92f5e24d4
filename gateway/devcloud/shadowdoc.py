"""AWS IoT Device Shadow document semantics, without any I/O.

`ShadowStore.handle` takes one request published on a shadow topic and returns the responses the
Device Shadow service would publish, in order. The rules follow the AWS developer guide
("Device Shadow service documents", "Device Shadow MQTT topics", "Device Shadow error messages").

Every request is hostile until bounded: size and nesting are checked on the raw bytes before
``json.loads`` (which raises RecursionError, not ValueError, on deep nests), numbers are bounded
while parsing, and any other exception while handling one request becomes that request's
``500 Internal service failure`` reply, so no payload can end the service.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gateway.core.jsonlimits import json_equal, nests_deeper_than, value_depth
from gateway.errors import GatewayError

__all__ = [
    "MAX_CLIENT_TOKEN_BYTES",
    "MAX_NESTING",
    "MAX_NUMBER_CHARS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SECTION_BYTES",
    "Response",
    "ShadowRequestError",
    "ShadowStore",
    "ShadowTopic",
    "check_nesting",
    "compute_delta",
    "loads_bounded",
    "parse_topic",
    "shadow_prefix",
]

MAX_NESTING: Final = 6
MAX_SECTION_BYTES: Final = 8 * 1024
MAX_CLIENT_TOKEN_BYTES: Final = 64
# AWS IoT Core refuses MQTT messages above 128 KB before the shadow service sees them.
MAX_PAYLOAD_BYTES: Final = 128 * 1024
# The longest number literal accepted (Jackson's default maxNumberLength): bounds int() parsing
# (quadratic in the digits) below Python's own 4300-digit limit, whatever the interpreter's
# setting. A 401-digit integer is stored as AWS stores it; refusing values no device can take
# is the gateway's job.
MAX_NUMBER_CHARS: Final = 1000
# AWS's error texts ("Device Shadow error messages" in the AWS IoT Core developer guide,
# docs.aws.amazon.com/iot/latest/developerguide/device-shadow-error-messages.html):
# 400 "JSON contains too many levels of nesting; maximum is 6", 413 "The payload exceeds the
# maximum size allowed", 415 "Unsupported documented encoding; supported encoding is UTF-8",
# 500 "Internal service failure".
_NESTING_MESSAGE: Final = f"JSON contains too many levels of nesting; maximum is {MAX_NESTING}"
_SIZE_MESSAGE: Final = "The payload exceeds the maximum size allowed"
_ENCODING_MESSAGE: Final = "Unsupported documented encoding; supported encoding is UTF-8"
_INVALID_JSON: Final = "Payload contains invalid json"
_INTERNAL_MESSAGE: Final = "Internal service failure"
# A request's own levels above a section's: the request object and "state".
_REQUEST_LEVELS: Final = 2
_SNAPSHOT_FORMAT: Final = 1

Operation = Literal["update", "get", "delete"]
_OPERATIONS: Final[frozenset[str]] = frozenset({"update", "get", "delete"})
_SECTIONS: Final = ("desired", "reported")


@dataclass(frozen=True)
class Response:
    """One message the shadow service publishes."""

    topic: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ShadowTopic:
    """A parsed shadow request topic."""

    thing: str
    name: str | None
    operation: Operation

    @property
    def prefix(self) -> str:
        return shadow_prefix(self.thing, self.name)


def shadow_prefix(thing: str, name: str | None = None) -> str:
    """Topic prefix of a classic (``name=None``) or named shadow."""
    base = f"$aws/things/{thing}/shadow"
    return base if name is None else f"{base}/name/{name}"


def parse_topic(topic: str) -> ShadowTopic | None:
    """Parse a shadow request topic (update/get/delete); None for any other topic."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "$aws" or parts[1] != "things" or parts[3] != "shadow":
        return None
    thing = parts[2]
    if len(parts) == 5:
        name, op = None, parts[4]
    elif len(parts) == 7 and parts[4] == "name" and parts[5]:
        name, op = parts[5], parts[6]
    else:
        return None
    if not thing or op not in _OPERATIONS:
        return None
    return ShadowTopic(thing, name, op)  # type: ignore[arg-type]  # op checked above


def compute_delta(desired: Mapping[str, Any], reported: Mapping[str, Any]) -> dict[str, Any]:
    """Keys of ``desired`` whose value differs from ``reported``, recursing into objects.

    Arrays and scalars are compared as whole values.
    """
    delta: dict[str, Any] = {}
    for key, want in desired.items():
        have = reported.get(key, _MISSING)
        if isinstance(want, dict) and isinstance(have, dict):
            sub = compute_delta(want, have)
            if sub:
                delta[key] = sub
        elif not json_equal(want, have):
            delta[key] = copy.deepcopy(want)
    return delta


class _Missing:
    pass


_MISSING: Final = _Missing()


def _stamp(value: object, ts: int) -> Any:
    """Metadata mirroring ``value``: ``{"timestamp": ts}`` per leaf, arrays element-wise."""
    if isinstance(value, dict):
        return {k: _stamp(v, ts) for k, v in value.items()}
    if isinstance(value, list):
        return [_stamp(v, ts) for v in value]
    return {"timestamp": ts}


def _merge(target: dict[str, Any], meta: dict[str, Any], patch: Mapping[str, Any], ts: int) -> None:
    """Merge ``patch`` into ``target`` in place: null deletes, objects merge, the rest replaces.

    Only the touched leaves get a new metadata timestamp (AWS keeps per-key metadata).
    """
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if isinstance(current, dict):
                sub_meta = meta.get(key)
                if not isinstance(sub_meta, dict):
                    sub_meta = meta[key] = {}
                _merge(current, sub_meta, value, ts)
            else:
                # A new object: nulls inside it mean "absent", so merge into an empty one.
                new: dict[str, Any] = {}
                new_meta: dict[str, Any] = {}
                _merge(new, new_meta, value, ts)
                target[key] = new
                meta[key] = new_meta
        else:
            target[key] = copy.deepcopy(value)
            meta[key] = _stamp(value, ts)


def _restrict(meta: Mapping[str, Any], shape: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``meta`` covering the keys of ``shape`` (metadata of a delta)."""
    out: dict[str, Any] = {}
    for key, value in shape.items():
        sub = meta.get(key)
        if isinstance(value, dict) and isinstance(sub, dict):
            out[key] = _restrict(sub, value)
        elif sub is not None:
            out[key] = copy.deepcopy(sub)
    return out


def _compact_size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class ShadowRequestError(GatewayError):
    """A request the Device Shadow service refuses: ``code`` and ``message`` as AWS sends them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ShadowRequestError(
            400, f"{_INVALID_JSON}: a number longer than {MAX_NUMBER_CHARS} characters"
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ShadowRequestError(
            400, f"{_INVALID_JSON}: a number longer than {MAX_NUMBER_CHARS} characters"
        )
    value = float(text)
    if not math.isfinite(value):
        # 1e400 would be stored as inf and sent on as "Infinity", which no JSON parser accepts.
        raise ShadowRequestError(400, f"{_INVALID_JSON}: a number out of range")
    return value


def loads_bounded(payload: bytes, *, max_nesting: int, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """Parse JSON the way the shadow service does; raise ShadowRequestError as AWS answers.

    Size (413), UTF-8 (415) and nesting (400) are checked before ``json.loads``; numbers longer
    than MAX_NUMBER_CHARS or out of a double's range and NaN/Infinity are refused (400).
    """
    if len(payload) > max_bytes:
        raise ShadowRequestError(413, _SIZE_MESSAGE)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ShadowRequestError(415, _ENCODING_MESSAGE) from None
    if nests_deeper_than(payload, max_nesting):
        raise ShadowRequestError(400, _NESTING_MESSAGE)
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except ValueError:
        raise ShadowRequestError(400, _INVALID_JSON) from None


def check_nesting(value: object) -> None:
    """Refuse (400) a desired or reported section nested deeper than MAX_NESTING."""
    if value_depth(value) > MAX_NESTING:
        raise ShadowRequestError(400, _NESTING_MESSAGE)


def _parse_object(payload: bytes, *, empty_ok: bool) -> dict[str, Any]:
    if empty_ok and len(payload) <= MAX_PAYLOAD_BYTES and not payload.strip():
        return {}
    doc = loads_bounded(payload, max_nesting=MAX_NESTING + _REQUEST_LEVELS)
    if not isinstance(doc, dict):
        raise ShadowRequestError(400, _INVALID_JSON)
    return doc


def _client_token(request: Mapping[str, Any]) -> str | None:
    if "clientToken" not in request:
        return None
    token = request["clientToken"]
    if not isinstance(token, str) or len(token.encode()) > MAX_CLIENT_TOKEN_BYTES:
        raise ShadowRequestError(400, "Invalid clientToken")
    return token


@dataclass
class _Shadow:
    version: int
    timestamp: int
    exists: bool = True
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    meta_desired: dict[str, Any] = field(default_factory=dict)
    meta_reported: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if name == "desired":
            return self.desired, self.meta_desired
        return self.reported, self.meta_reported

    def clear(self, name: str) -> None:
        data, meta = self.section(name)
        data.clear()
        meta.clear()

    def state_view(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, metadata) with empty sections left out, deep-copied."""
        state: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for name in _SECTIONS:
            data, meta = self.section(name)
            if data:
                state[name] = copy.deepcopy(data)
                metadata[name] = copy.deepcopy(meta)
        return state, metadata

    def document(self, timestamp: int) -> dict[str, Any]:
        state, metadata = self.state_view()
        delta = compute_delta(self.desired, self.reported)
        if delta:
            state["delta"] = delta
        return {
            "state": state,
            "metadata": metadata,
            "version": self.version,
            "timestamp": timestamp,
        }

    def versioned_view(self) -> dict[str, Any]:
        state, metadata = self.state_view()
        return {"state": state, "metadata": metadata, "version": self.version}

    def to_json(self, thing: str, name: str | None) -> dict[str, Any]:
        return {
            "thing": thing,
            "name": name,
            "version": self.version,
            "timestamp": self.timestamp,
            "exists": self.exists,
            "desired": copy.deepcopy(self.desired),
            "reported": copy.deepcopy(self.reported),
            "metadata": {
                "desired": copy.deepcopy(self.meta_desired),
                "reported": copy.deepcopy(self.meta_reported),
            },
        }


def _with_token(payload: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token is not None:
        payload["clientToken"] = token
    return payload


class ShadowStore:
    """All shadows of the dev cloud, keyed by (thing, shadow name or None for classic)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Deleted shadows stay as tombstones: AWS continues their version numbers on re-creation.
        self._shadows: dict[tuple[str, str | None], _Shadow] = {}

    def _now(self) -> int:
        return int(self._clock())

    def handle(self, topic: str, payload: bytes) -> list[Response]:
        """Process one request; return the responses to publish, in order.

        Never raises for a request: a refused one gets its ``rejected`` reply, and any other
        exception a ``500 Internal service failure`` one, with the shadow left as it was.
        """
        parsed = parse_topic(topic)
        if parsed is None:
            return []
        token: str | None = None
        try:
            request = _parse_object(payload, empty_ok=parsed.operation != "update")
            token = _client_token(request)
            if parsed.operation == "update":
                return self._apply_update(parsed, request, token)
            if parsed.operation == "get":
                return self._get(parsed, token)
            return self._delete(parsed, token)
        except ShadowRequestError as error:
            return self._rejected(parsed, error, token)
        except Exception:  # one request's failure must not end the service
            return self._rejected(parsed, ShadowRequestError(500, _INTERNAL_MESSAGE), token)

    def document(self, thing: str, name: str | None = None) -> dict[str, Any] | None:
        """The current document as ``get`` returns it (without clientToken), or None."""
        shadow = self._shadows.get((thing, name))
        if shadow is None or not shadow.exists:
            return None
        return shadow.document(shadow.timestamp)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable deep copy of every shadow (tombstones included)."""
        return {
            "format": _SNAPSHOT_FORMAT,
            "shadows": [s.to_json(thing, name) for (thing, name), s in self._shadows.items()],
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace every shadow with those of ``snapshot``; raise ValueError if malformed."""
        if snapshot.get("format") != _SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported shadow snapshot format: {snapshot.get('format')!r}")
        shadows: dict[tuple[str, str | None], _Shadow] = {}
        try:
            for item in snapshot["shadows"]:
                shadows[(str(item["thing"]), item["name"])] = _Shadow(
                    version=int(item["version"]),
                    timestamp=int(item["timestamp"]),
                    exists=bool(item["exists"]),
                    desired=dict(copy.deepcopy(item["desired"])),
                    reported=dict(copy.deepcopy(item["reported"])),
                    meta_desired=dict(copy.deepcopy(item["metadata"]["desired"])),
                    meta_reported=dict(copy.deepcopy(item["metadata"]["reported"])),
                )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed shadow snapshot: {exc!r}") from exc
        self._shadows = shadows

    # --- operations ---------------------------------------------------------------------------

    def _rejected(
        self, topic: ShadowTopic, error: ShadowRequestError, token: str | None
    ) -> list[Response]:
        payload = {"code": error.code, "message": error.message, "timestamp": self._now()}
        return [Response(f"{topic.prefix}/{topic.operation}/rejected", _with_token(payload, token))]

    def _live(self, topic: ShadowTopic) -> _Shadow:
        """The existing shadow a get or delete names; a 404 rejection if there is none."""
        shadow = self._shadows.get((topic.thing, topic.name))
        if shadow is None or not shadow.exists:
            raise ShadowRequestError(
                404, f"No shadow exists with name: '{topic.name or topic.thing}'"
            )
        return shadow

    def _apply_update(
        self, topic: ShadowTopic, request: Mapping[str, Any], token: str | None
    ) -> list[Response]:
        if "state" not in request:
            raise ShadowRequestError(400, "Missing required node: state")
        state = request["state"]
        if not isinstance(state, dict):
            raise ShadowRequestError(400, "State node must be an object")
        if any(key not in _SECTIONS for key in state):
            raise ShadowRequestError(400, "State contains an invalid node")
        for name in _SECTIONS:
            if name in state and not isinstance(state[name], dict | None):
                raise ShadowRequestError(400, f"{name.capitalize()} node must be an object")
        expected = request.get("version")
        if "version" in request and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise ShadowRequestError(400, "Invalid version")
        for name in _SECTIONS:
            check_nesting(state.get(name))

        key = (topic.thing, topic.name)
        old = self._shadows.get(key)
        live = old is not None and old.exists
        if expected is not None and (old is None or not live or expected != old.version):
            raise ShadowRequestError(409, "Version conflict")

        now = self._now()
        new = copy.deepcopy(old) if live and old is not None else _Shadow(0, now)
        new.version = (old.version if old is not None else 0) + 1
        new.timestamp = now
        new.exists = True
        for name in _SECTIONS:
            if name not in state:
                continue
            if state[name] is None:
                new.clear(name)
            else:
                data, meta = new.section(name)
                _merge(data, meta, state[name], now)
        if any(_compact_size(new.section(name)[0]) > MAX_SECTION_BYTES for name in _SECTIONS):
            raise ShadowRequestError(413, _SIZE_MESSAGE)
        self._shadows[key] = new

        requested = {name: copy.deepcopy(state[name]) for name in _SECTIONS if name in state}
        accepted = {
            "state": requested,
            "metadata": {name: _stamp(value, now) for name, value in requested.items()},
            "version": new.version,
            "timestamp": now,
        }
        responses = [Response(f"{topic.prefix}/update/accepted", _with_token(accepted, token))]
        delta = compute_delta(new.desired, new.reported)
        if delta:
            delta_msg = {
                "version": new.version,
                "timestamp": now,
                "state": delta,
                "metadata": _restrict(new.meta_desired, delta),
            }
            responses.append(
                Response(f"{topic.prefix}/update/delta", _with_token(delta_msg, token))
            )
        documents = {
            # A shadow created by this update has no previous document.
            "previous": old.versioned_view() if live and old is not None else None,
            "current": new.versioned_view(),
            "timestamp": now,
        }
        responses.append(
            Response(f"{topic.prefix}/update/documents", _with_token(documents, token))
        )
        return responses

    def _get(self, topic: ShadowTopic, token: str | None) -> list[Response]:
        shadow = self._live(topic)
        document = _with_token(shadow.document(self._now()), token)
        return [Response(f"{topic.prefix}/get/accepted", document)]

    def _delete(self, topic: ShadowTopic, token: str | None) -> list[Response]:
        shadow = self._live(topic)
        now = self._now()
        shadow.exists = False
        shadow.timestamp = now
        for name in _SECTIONS:
            shadow.clear(name)
        accepted = _with_token({"version": shadow.version, "timestamp": now}, token)
        return [Response(f"{topic.prefix}/delete/accepted", accepted)]
