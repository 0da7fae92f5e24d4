"""How long ``parse_reply`` takes on the replies of the delta hot path, in microseconds.

Typical replies of a two-output thing (the shapes of AWS's "Device Shadow service documents"),
each parsed ``ROUNDS`` times ``NUMBER`` times; the figures are the best and the median round.
To compare two checkouts, run this file by path (it needs nothing else of bench/) from outside
both, once with each checkout's venv: ``cd /tmp && <checkout>/.venv/bin/python
<this checkout>/bench/replies.py``; alternate the two a few times, since a shared machine moves
the figures between runs.
"""

from __future__ import annotations

import json
import statistics
import timeit
from functools import partial

from gateway.links.shadow.messages import parse_reply
from gateway.links.shadow.topics import Reply

ROUNDS = 31
NUMBER = 5000
_NOW = 1764619200

REPLIES: dict[Reply, bytes] = {
    Reply.UPDATE_DELTA: json.dumps(
        {
            "version": 1234,
            "timestamp": _NOW,
            "state": {"led": True, "relay": False},
            "metadata": {"led": {"timestamp": _NOW - 1}, "relay": {"timestamp": _NOW - 1}},
            "clientToken": "edge-gw-7f3a9c",
        }
    ).encode(),
    Reply.UPDATE_ACCEPTED: json.dumps(
        {
            "state": {"reported": {"led": True}, "desired": {"led": None}},
            "metadata": {"reported": {"led": {"timestamp": _NOW}}},
            "version": 1235,
            "timestamp": _NOW,
            "clientToken": "edge-gw-7f3a9e",
        }
    ).encode(),
    Reply.GET_ACCEPTED: json.dumps(
        {
            "version": 1234,
            "timestamp": _NOW,
            "clientToken": "edge-gw-7f3a9d",
            "state": {
                "desired": {"led": True, "relay": False},
                "reported": {"led": False, "relay": False, "temp": 21.5},
                "delta": {"led": True},
            },
            "metadata": {
                "desired": {"led": {"timestamp": _NOW - 1}, "relay": {"timestamp": _NOW - 1}},
                "reported": {
                    "led": {"timestamp": _NOW - 100},
                    "relay": {"timestamp": _NOW - 100},
                    "temp": {"timestamp": _NOW - 100},
                },
            },
        }
    ).encode(),
}


def measure() -> dict[str, tuple[float, float]]:
    """Per reply kind: (best, median) microseconds per ``parse_reply``."""
    figures = {}
    for kind, payload in REPLIES.items():
        rounds = timeit.repeat(partial(parse_reply, kind, payload), number=NUMBER, repeat=ROUNDS)
        per_call = [seconds / NUMBER * 1e6 for seconds in rounds]
        figures[kind.value] = (min(per_call), statistics.median(per_call))
    return figures


def main() -> None:
    for kind, (best, median) in measure().items():
        size = len(REPLIES[Reply(kind)])
        print(f"{kind:16} best {best:6.2f} us  median {median:6.2f} us  ({size} bytes)")


if __name__ == "__main__":
    main()
