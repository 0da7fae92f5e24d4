"""What a provisioning answer may contain, checked before anything is installed (pure).

A getCerts answer, a fleet-provisioning reply and ``provisioned.yaml`` all carry values the
cloud assigned: a thing name, an endpoint, a port. They end up in the MQTT client id, in shadow
topics and in the config, so they must be what AWS IoT itself allows (a thing name is 1-128
characters of ``a-zA-Z0-9:_-``; an endpoint a host name or IP address; a port an integer
1-65535, never ``true`` or ``8883.0``). Answers are decoded with a size cap and a nesting
check made on the raw text, before ``json`` recurses into it.
"""

from __future__ import annotations

import json
from typing import Any

# The value rules live with the config (provisioned.yaml is checked by them when it is loaded).
from gateway.config.names import (
    MAX_THING_NAME,
    AnswerError,
    cloud_id,
    host_name,
    port,
    shown,
    thing_name,
)
from gateway.core.jsonlimits import nests_deeper_than

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_ANSWER_DEPTH",
    "MAX_THING_NAME",
    "AnswerError",
    "cloud_id",
    "decode_object",
    "host_name",
    "nests_deeper_than",
    "port",
    "shown",
    "thing_name",
]

MAX_ANSWER_BYTES = 1024 * 1024  # a getCerts answer is a few KB (certificate, key, names)
MAX_ANSWER_DEPTH = 8  # the answers are flat objects; allow a little room for extensions


def decode_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from an answer's bytes; ``AnswerError`` if too large, too deep or not one
    (blocking for up to a fraction of a second on a hostile answer: run it in a thread)."""
    if len(raw) > MAX_ANSWER_BYTES:
        raise AnswerError(f"is larger than the {MAX_ANSWER_BYTES} bytes an answer may have")
    if nests_deeper_than(raw, MAX_ANSWER_DEPTH):
        raise AnswerError(f"nests deeper than {MAX_ANSWER_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise AnswerError("is not JSON") from exc
    if not isinstance(body, dict):
        raise AnswerError("is not a JSON object")
    return body
