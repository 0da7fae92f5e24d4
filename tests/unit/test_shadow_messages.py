"""Shadow service replies as AWS documents them: what each reply kind accepts, every refusal
``parse_reply`` makes (always a ``PayloadError`` naming the field, never its value), and that
no JSON whatever raises anything else."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.links.shadow.messages import (
    DeltaMessage,
    ErrorReply,
    PayloadError,
    ShadowDocument,
    ShadowState,
    UpdateAccepted,
    parse_reply,
)
from gateway.links.shadow.topics import Reply

# Shapes from AWS's "Device Shadow service documents" (response state documents, error
# response document), with the values a real reply carries.
DELTA: dict[str, Any] = {
    "state": {"led": True, "fan": 0.5},
    "metadata": {"led": {"timestamp": 1764619199}, "fan": {"timestamp": 1764619199}},
    "timestamp": 1764619200,
    "clientToken": "gw-1",
    "version": 7,
}
DOCUMENT: dict[str, Any] = {
    "state": {
        "desired": {"led": True},
        "reported": {"led": False},
        "delta": {"led": True},
    },
    "metadata": {
        "desired": {"led": {"timestamp": 1764619199}},
        "reported": {"led": {"timestamp": 1764619100}},
    },
    "timestamp": 1764619200,
    "clientToken": "gw-2",
    "version": 7,
}
ACCEPTED: dict[str, Any] = {
    "state": {"reported": {"led": True}, "desired": {"led": None}},
    "metadata": {"reported": {"led": {"timestamp": 1764619200}}},
    "timestamp": 1764619200,
    "clientToken": "gw-3",
    "version": 8,
}
ERROR: dict[str, Any] = {
    "code": 409,
    "message": "Version conflict",
    "timestamp": 1764619200,
    "clientToken": "gw-4",
}

EXAMPLES: dict[Reply, dict[str, Any]] = {
    Reply.UPDATE_DELTA: DELTA,
    Reply.GET_ACCEPTED: DOCUMENT,
    Reply.UPDATE_ACCEPTED: ACCEPTED,
    Reply.UPDATE_REJECTED: ERROR,
    Reply.GET_REJECTED: ERROR,
}


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def with_field(kind: Reply, name: str, raw: str) -> bytes:
    """The kind's example with one field's JSON text replaced (``raw`` is JSON as sent, so
    NaN, Infinity and long integers go in as written)."""
    fields = {key: json.dumps(value) for key, value in EXAMPLES[kind].items()}
    fields[name] = raw
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}").encode()


def without_field(kind: Reply, name: str) -> bytes:
    return encode({k: v for k, v in EXAMPLES[kind].items() if k != name})


def refusal(kind: Reply, payload: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_reply(kind, payload)
    return caught.value


# What each reply kind accepts


def test_a_delta_as_aws_sends_it_is_read_into_its_model() -> None:
    reply = parse_reply(Reply.UPDATE_DELTA, encode(DELTA))
    assert reply == DeltaMessage(
        client_token="gw-1", timestamp=1764619200, version=7, state={"led": True, "fan": 0.5}
    )


def test_a_document_as_aws_sends_it_is_read_into_its_model() -> None:
    reply = parse_reply(Reply.GET_ACCEPTED, encode(DOCUMENT))
    assert reply == ShadowDocument(
        client_token="gw-2",
        timestamp=1764619200,
        version=7,
        state=ShadowState(desired={"led": True}, reported={"led": False}, delta={"led": True}),
        metadata=DOCUMENT["metadata"],
    )


def test_an_accepted_update_keeps_its_null_deletions() -> None:
    reply = parse_reply(Reply.UPDATE_ACCEPTED, encode(ACCEPTED))
    assert reply == UpdateAccepted(
        client_token="gw-3", timestamp=1764619200, version=8, state=ACCEPTED["state"]
    )


@pytest.mark.parametrize("kind", [Reply.UPDATE_REJECTED, Reply.GET_REJECTED])
def test_an_error_reply_as_aws_sends_it_is_read_into_its_model(kind: Reply) -> None:
    reply = parse_reply(kind, encode(ERROR))
    assert reply == ErrorReply(
        client_token="gw-4", timestamp=1764619200, code=409, message="Version conflict"
    )


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_fields_aws_may_add_are_ignored(kind: Reply) -> None:
    extended = {**EXAMPLES[kind], "newField": {"any": [1, "thing"]}}
    assert parse_reply(kind, encode(extended)) == parse_reply(kind, encode(EXAMPLES[kind]))


@pytest.mark.parametrize("kind", list(EXAMPLES))
@pytest.mark.parametrize("name", ["clientToken", "timestamp"])
def test_client_token_and_timestamp_may_be_absent_or_null(kind: Reply, name: str) -> None:
    attribute = {"clientToken": "client_token", "timestamp": "timestamp"}[name]
    assert getattr(parse_reply(kind, without_field(kind, name)), attribute) is None
    assert getattr(parse_reply(kind, with_field(kind, name, "null")), attribute) is None


def test_a_timestamp_with_a_fraction_is_kept() -> None:
    reply = parse_reply(Reply.UPDATE_DELTA, with_field(Reply.UPDATE_DELTA, "timestamp", "12.5"))
    assert reply.timestamp == 12.5


def test_version_zero_is_accepted() -> None:
    reply = parse_reply(Reply.UPDATE_DELTA, with_field(Reply.UPDATE_DELTA, "version", "0"))
    assert isinstance(reply, DeltaMessage) and reply.version == 0


def test_only_the_wire_name_client_token_is_read() -> None:
    payload = encode({"version": 1, "state": {}, "client_token": "not-an-aws-field"})
    assert parse_reply(Reply.UPDATE_DELTA, payload).client_token is None


def test_a_document_without_state_has_empty_sections() -> None:
    reply = parse_reply(Reply.GET_ACCEPTED, encode({"version": 1}))
    assert isinstance(reply, ShadowDocument) and reply.state == ShadowState()
    assert reply.metadata is None


@pytest.mark.parametrize("section", ["desired", "reported", "delta"])
def test_a_document_section_may_be_null(section: str) -> None:
    payload = encode({"version": 1, "state": {section: None}})
    reply = parse_reply(Reply.GET_ACCEPTED, payload)
    assert isinstance(reply, ShadowDocument) and getattr(reply.state, section) is None


def test_an_accepted_update_without_or_with_null_state_has_none() -> None:
    assert parse_reply(Reply.UPDATE_ACCEPTED, encode({"version": 2})) == UpdateAccepted(version=2)
    payload = encode({"version": 2, "state": None})
    assert parse_reply(Reply.UPDATE_ACCEPTED, payload) == UpdateAccepted(version=2)


def test_an_error_reply_without_a_message_has_an_empty_one() -> None:
    reply = parse_reply(Reply.GET_REJECTED, encode({"code": 404}))
    assert isinstance(reply, ErrorReply) and reply.message == ""


def test_replies_are_frozen() -> None:
    reply = parse_reply(Reply.UPDATE_DELTA, encode(DELTA))
    assert isinstance(reply, DeltaMessage)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.version = 8  # type: ignore[misc]


# desired_timestamp: when the document says desired.<name> was set


def test_desired_timestamp_comes_from_the_documents_metadata() -> None:
    reply = parse_reply(Reply.GET_ACCEPTED, encode(DOCUMENT))
    assert isinstance(reply, ShadowDocument)
    assert reply.desired_timestamp("led") == 1764619199.0


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"desired": []}, {"desired": {"led": 5}}, {"desired": {"led": {"timestamp": "x"}}}],
)
def test_desired_timestamp_is_none_when_the_metadata_does_not_say(metadata: object) -> None:
    reply = parse_reply(Reply.GET_ACCEPTED, encode({"version": 1, "metadata": metadata}))
    assert isinstance(reply, ShadowDocument) and reply.desired_timestamp("led") is None


# Refusals: one per field and way of being wrong

VERSIONED = [Reply.UPDATE_DELTA, Reply.GET_ACCEPTED, Reply.UPDATE_ACCEPTED]


@pytest.mark.parametrize("kind", VERSIONED)
@pytest.mark.parametrize(
    "raw",
    [
        "true",  # a boolean is no version
        "false",
        '"5"',  # AWS sends numbers; a numeric string is not one
        "5.0",  # nor a number written with a fraction or exponent
        "5.5",
        "1e3",
        "123456789012345678901234",  # beyond 20 digits: parsed as a float, so refused
        "null",
        "[]",
        "{}",
    ],
)
def test_a_version_that_is_not_a_json_integer_is_refused(kind: Reply, raw: str) -> None:
    error = refusal(kind, with_field(kind, "version", raw))
    assert (
        error.reason == f"not a valid {kind.value} reply: version: Input should be a valid integer"
    )


@pytest.mark.parametrize("kind", VERSIONED)
def test_a_negative_version_is_refused(kind: Reply) -> None:
    error = refusal(kind, with_field(kind, "version", "-1"))
    assert error.reason.endswith("version: Input should be greater than or equal to 0")


@pytest.mark.parametrize("kind", VERSIONED)
def test_a_reply_without_a_version_is_refused(kind: Reply) -> None:
    error = refusal(kind, without_field(kind, "version"))
    assert error.reason == f"not a valid {kind.value} reply: version: Field required"


@pytest.mark.parametrize("kind", list(EXAMPLES))
@pytest.mark.parametrize(
    "raw", ["true", '"1764619200"', "NaN", "Infinity", "-Infinity", "[]", "{}"]
)
def test_a_timestamp_that_is_not_a_finite_number_is_refused(kind: Reply, raw: str) -> None:
    error = refusal(kind, with_field(kind, "timestamp", raw))
    assert (
        error.reason
        == f"not a valid {kind.value} reply: timestamp: Input should be a finite number"
    )


def test_a_timestamp_too_long_for_a_float_is_refused() -> None:
    error = refusal(Reply.UPDATE_DELTA, with_field(Reply.UPDATE_DELTA, "timestamp", "9" * 400))
    assert error.reason.endswith("timestamp: Input should be a finite number")


@pytest.mark.parametrize("kind", list(EXAMPLES))
@pytest.mark.parametrize("raw", ["5", "true", "[]", '{"t": "x"}'])
def test_a_client_token_that_is_not_a_string_is_refused(kind: Reply, raw: str) -> None:
    error = refusal(kind, with_field(kind, "clientToken", raw))
    assert (
        error.reason
        == f"not a valid {kind.value} reply: clientToken: Input should be a valid string"
    )


@pytest.mark.parametrize("raw", ["null", "[]", '"led"', "1", "true"])
def test_a_delta_whose_state_is_not_an_object_is_refused(raw: str) -> None:
    error = refusal(Reply.UPDATE_DELTA, with_field(Reply.UPDATE_DELTA, "state", raw))
    assert error.reason.endswith("state: Input should be a valid dictionary")


def test_a_delta_without_state_is_refused() -> None:
    error = refusal(Reply.UPDATE_DELTA, without_field(Reply.UPDATE_DELTA, "state"))
    assert error.reason == "not a valid update/delta reply: state: Field required"


@pytest.mark.parametrize("raw", ["null", "[]", '"x"', "1"])
def test_a_document_whose_state_is_not_an_object_is_refused(raw: str) -> None:
    error = refusal(Reply.GET_ACCEPTED, with_field(Reply.GET_ACCEPTED, "state", raw))
    assert error.reason.endswith("state: Input should be a valid dictionary")


@pytest.mark.parametrize("section", ["desired", "reported", "delta"])
@pytest.mark.parametrize("value", [[], "x", 1, True])
def test_a_document_section_that_is_not_an_object_is_refused(section: str, value: object) -> None:
    error = refusal(Reply.GET_ACCEPTED, encode({"version": 1, "state": {section: value}}))
    assert error.reason == (
        f"not a valid get/accepted reply: state.{section}: Input should be a valid dictionary"
    )


@pytest.mark.parametrize("raw", ["[]", '"x"', "1"])
def test_document_metadata_that_is_not_an_object_is_refused(raw: str) -> None:
    error = refusal(Reply.GET_ACCEPTED, with_field(Reply.GET_ACCEPTED, "metadata", raw))
    assert error.reason.endswith("metadata: Input should be a valid dictionary")


@pytest.mark.parametrize("raw", ["[]", '"x"', "1", "false"])
def test_an_accepted_update_whose_state_is_not_an_object_is_refused(raw: str) -> None:
    error = refusal(Reply.UPDATE_ACCEPTED, with_field(Reply.UPDATE_ACCEPTED, "state", raw))
    assert error.reason.endswith("state: Input should be a valid dictionary")


@pytest.mark.parametrize("kind", [Reply.UPDATE_REJECTED, Reply.GET_REJECTED])
@pytest.mark.parametrize("raw", ["true", '"404"', "404.0", "null", "[]"])
def test_an_error_code_that_is_not_a_json_integer_is_refused(kind: Reply, raw: str) -> None:
    error = refusal(kind, with_field(kind, "code", raw))
    assert error.reason == f"not a valid {kind.value} reply: code: Input should be a valid integer"


@pytest.mark.parametrize("kind", [Reply.UPDATE_REJECTED, Reply.GET_REJECTED])
def test_an_error_reply_without_a_code_is_refused(kind: Reply) -> None:
    error = refusal(kind, without_field(kind, "code"))
    assert error.reason == f"not a valid {kind.value} reply: code: Field required"


@pytest.mark.parametrize("raw", ["null", "5", "[]"])
def test_an_error_message_that_is_not_a_string_is_refused(raw: str) -> None:
    error = refusal(Reply.UPDATE_REJECTED, with_field(Reply.UPDATE_REJECTED, "message", raw))
    assert error.reason.endswith("message: Input should be a valid string")


# The refusal's reason and shape


def test_a_refusal_names_up_to_three_problems_in_field_order() -> None:
    payload = encode({"clientToken": 3, "timestamp": [], "version": "x", "state": []})
    error = refusal(Reply.UPDATE_DELTA, payload)
    assert error.reason == (
        "not a valid update/delta reply: clientToken: Input should be a valid string; "
        "timestamp: Input should be a finite number; version: Input should be a valid integer"
    )


def test_a_refusal_carries_no_value_in_its_reason_or_shape() -> None:
    secret = "s3cr3t-value"
    payload = encode({"clientToken": [secret], "version": secret, "state": secret})
    error = refusal(Reply.UPDATE_DELTA, payload)
    assert secret not in error.reason and secret not in error.shape
    assert error.shape == "{clientToken: list[1], version: str, state: str}"


# Any JSON at all: a reply or a PayloadError, nothing else

FIELD_NAMES = ["version", "state", "clientToken", "timestamp", "metadata", "code", "message"]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["desired", "reported", "delta", "led"]) | st.text(max_size=3),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
reply_objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=4), json_values, max_size=6
)


@given(st.sampled_from(list(Reply)), reply_objects)
def test_any_json_object_gives_a_reply_or_a_payload_error(
    kind: Reply, value: dict[str, Any]
) -> None:
    payload = json.dumps(value).encode()  # NaN and Infinity written as JSON's extensions
    try:
        reply = parse_reply(kind, payload)
    except PayloadError as exc:
        assert exc.reason and exc.shape
        return
    assert reply.client_token is None or isinstance(reply.client_token, str)
    stamp = reply.timestamp
    assert stamp is None or (type(stamp) in (int, float) and abs(stamp) != float("inf"))
    if isinstance(reply, DeltaMessage | ShadowDocument | UpdateAccepted):
        assert type(reply.version) is int and reply.version >= 0
    if isinstance(reply, ErrorReply):
        assert type(reply.code) is int and isinstance(reply.message, str)


@given(st.sampled_from(list(Reply)), st.binary(max_size=64))
def test_any_bytes_give_a_reply_or_a_payload_error(kind: Reply, payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_reply(kind, payload)


def test_the_reply_models_load_no_pydantic() -> None:
    """The daemon's memory budget (issue 14): the shadow link's reply models are plain."""
    code = (
        "import sys, gateway.links.shadow.messages; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
