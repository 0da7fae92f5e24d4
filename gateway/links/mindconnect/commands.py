"""Commands from Insights Hub on ``i/cmd_v3/c``, read into what to do (pure).

The message, from Siemens' sample client (``MindConnectClient.py`` of
github.com/mindsphere/mindconnect-mqtt): ``{"id": <request id>, "data": {"jobId": ...,
"payload": {"commandType": ..., ...}}}``. The sample reads ``data.payload`` as an object and
keeps, commented out, a ``json.loads`` of it as a string: both are accepted here. The gateway's
own command is ``{"commandType": "set", "device": NAME, "value": VALUE}`` (this project's, in
the payload the platform leaves to the agent); VALUE is a JSON value checked exactly like a
shadow's desired value for that device.

A message is first bounded (size, then nesting, before ``json.loads``). One without a usable
``id`` cannot be answered: it is dropped (``Dropped``). Anything else that cannot be carried
out is answered ``FAILED`` with the reason (``Refused``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.core.jsonlimits import nests_deeper_than

MAX_COMMAND_BYTES = 16 * 1024  # a set command is well under a hundred bytes
MAX_NESTING = 8
MAX_ID_CHARS = 256
SET = "set"


@dataclass(frozen=True)
class SetCommand:
    request_id: str
    job_id: Any  # echoed back as it came (a string in Siemens' samples)
    device: str
    value: Any


@dataclass(frozen=True)
class Refused:
    request_id: str
    job_id: Any
    reason: str


@dataclass(frozen=True)
class Dropped:
    reason: str
    shape: str


Parsed = SetCommand | Refused | Dropped


def shape(value: object) -> str:
    """A value-free description of a JSON value, safe to log."""
    if isinstance(value, dict):
        keys = sorted(str(key)[:32] for key in value)[:8]
        return "object{" + ",".join(keys) + ("…" if len(value) > 8 else "") + "}"
    if isinstance(value, list):
        return f"array[{len(value)}]"
    return type(value).__name__


def _bounded_json(raw: bytes | str) -> tuple[Any, str | None]:
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_COMMAND_BYTES:
        return None, f"larger than {MAX_COMMAND_BYTES} bytes"
    if nests_deeper_than(data, MAX_NESTING):
        return None, f"nested deeper than {MAX_NESTING} levels"
    try:
        return json.loads(data), None
    except (ValueError, RecursionError):
        return None, "not JSON"


def _usable_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def parse_command(raw: bytes) -> Parsed:
    message, problem = _bounded_json(raw)
    if problem is not None:
        return Dropped(problem, f"{len(raw)} bytes")
    if not isinstance(message, dict):
        return Dropped("not a JSON object", shape(message))
    request_id = message.get("id")
    if not _usable_id(request_id):
        return Dropped("no usable 'id' to answer", shape(message))
    assert isinstance(request_id, str)
    data = message.get("data")
    job_id = data.get("jobId") if isinstance(data, dict) else None
    if not isinstance(job_id, str | int | None) or isinstance(job_id, bool):
        job_id = None  # echo only a scalar id
    if isinstance(job_id, str) and len(job_id) > MAX_ID_CHARS:
        job_id = None
    if not isinstance(data, dict):
        return Refused(request_id, job_id, "expected 'data' with 'jobId' and 'payload'")
    payload = data.get("payload")
    if isinstance(payload, str):
        payload, problem = _bounded_json(payload)
        if problem is not None:
            return Refused(request_id, job_id, f"'payload' is a string that is {problem}")
    if not isinstance(payload, dict):
        return Refused(request_id, job_id, "expected 'data.payload' to be an object")
    kind = payload.get("commandType")
    if kind != SET:
        return Refused(
            request_id, job_id, f"unknown commandType (this gateway carries out {SET!r})"
        )
    device = payload.get("device")
    if not isinstance(device, str) or not device:
        return Refused(request_id, job_id, "expected 'device': the name of an output")
    if "value" not in payload:
        return Refused(request_id, job_id, "expected 'value'")
    return SetCommand(request_id, job_id, device, payload["value"])
