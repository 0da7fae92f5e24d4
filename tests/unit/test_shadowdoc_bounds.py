"""The shadow store's bounds on hostile requests (issue 19): size, nesting and numbers checked
before or while parsing, and a 500 instead of an exception for anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.core.jsonlimits import json_depth
from gateway.devcloud.shadowdoc import (
    MAX_NUMBER_CHARS,
    MAX_PAYLOAD_BYTES,
    ShadowRequestError,
    ShadowStore,
    loads_bounded,
)

THING = "lamp-1"
PREFIX = f"$aws/things/{THING}/shadow"
NESTING = "JSON contains too many levels of nesting; maximum is 6"


def answer(store: ShadowStore, operation: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    """("accepted" | "rejected", payload) of the first response (delta/documents follow it)."""
    first = store.handle(f"{PREFIX}/{operation}", payload)[0]
    return first.topic.rsplit("/", 1)[-1], first.payload


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a":[{"b":[]}]}', 4),
        (b'{"a":"[[[[{{{{"}', 1),  # brackets inside strings are text
        (b'{"a":"\\"[[[[\\\\"}', 1),  # escaped quotes do not end the string
        (b"[" * 100_000, 100_000),
    ],
)
def test_json_nesting_counts_brackets_outside_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize("operation", ["update", "get", "delete"])
def test_nesting_beyond_recursion_limits_is_rejected_before_parsing(operation: str) -> None:
    payload = b'{"state":{"reported":{"x":' + b"[" * 60_000 + b"]" * 60_000 + b"}}}"
    outcome, body = answer(ShadowStore(), operation, payload)
    assert (outcome, body["code"], body["message"]) == ("rejected", 400, NESTING)


def test_nesting_that_json_can_parse_but_the_store_cannot_recurse_is_rejected() -> None:
    payload = b'{"state":{"desired":{"x":' + b"[" * 990 + b"]" * 990 + b"}}}"
    outcome, body = answer(ShadowStore(), "update", payload)
    assert (outcome, body["code"], body["message"]) == ("rejected", 400, NESTING)


def test_six_levels_in_a_section_still_pass_the_raw_scan() -> None:
    payload = json.dumps({"state": {"reported": {"a": {"b": {"c": {"d": {"e": 1}}}}}}}).encode()
    assert answer(ShadowStore(), "update", payload)[0] == "accepted"


@pytest.mark.parametrize(
    ("number", "detail"),
    [
        (b"9" * (MAX_NUMBER_CHARS + 1), "a number longer than 1000 characters"),
        (b"9" * 5000, "a number longer than 1000 characters"),
        (b"1e400", "a number out of range"),
        (b"-1e400", "a number out of range"),
        (b"1" * 400 + b".0", "a number out of range"),
    ],
)
def test_numbers_no_json_reader_can_take_back_are_rejected(number: bytes, detail: str) -> None:
    payload = b'{"state":{"desired":{"n":' + number + b"}}}"
    outcome, body = answer(ShadowStore(), "update", payload)
    assert (outcome, body["code"]) == ("rejected", 400)
    assert body["message"] == f"Payload contains invalid json: {detail}"


def test_a_401_digit_integer_is_stored_exactly() -> None:
    store = ShadowStore()
    huge = int("9" * 401)
    assert answer(store, "update", b'{"state":{"desired":{"n":%d}}}' % huge)[0] == "accepted"
    document = store.document(THING)
    assert document is not None and document["state"]["desired"]["n"] == huge


def test_nan_and_infinity_literals_are_invalid_json() -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = answer(ShadowStore(), "update", b'{"state":{"desired":{"n":' + literal + b"}}}")[1]
        assert (body["code"], body["message"]) == (400, "Payload contains invalid json")


def test_loads_bounded_refuses_size_encoding_and_nesting_with_aws_codes() -> None:
    with pytest.raises(ShadowRequestError) as size:
        loads_bounded(b" " * (MAX_PAYLOAD_BYTES + 1), max_nesting=8)
    with pytest.raises(ShadowRequestError) as encoding:
        loads_bounded(b'"\xff"', max_nesting=8)
    with pytest.raises(ShadowRequestError) as nesting:
        loads_bounded(b"[[[]]]", max_nesting=2)
    assert [e.value.code for e in (size, encoding, nesting)] == [413, 415, 400]
    assert loads_bounded(b"[[]]", max_nesting=2) == [[]]


def test_any_other_failure_is_answered_500_with_the_token_and_changes_nothing() -> None:
    calls = 0

    def clock() -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("clock unavailable")
        return 1_700_000_000.0

    store = ShadowStore(clock=clock)
    payload = json.dumps({"state": {"desired": {"on": True}}, "clientToken": "t-1"}).encode()
    outcome, body = answer(store, "update", payload)
    assert (outcome, body["code"], body["message"]) == ("rejected", 500, "Internal service failure")
    assert body["clientToken"] == "t-1"
    assert store.document(THING) is None
    assert answer(store, "update", payload)[0] == "accepted"
