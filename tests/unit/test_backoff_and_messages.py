"""Reconnect backoff, and the bounds every inbound payload must meet."""

from __future__ import annotations

import json

import pytest

from gateway.core.backoff import Backoff
from gateway.links.shadow.messages import (
    MAX_PAYLOAD_BYTES,
    DeltaMessage,
    PayloadError,
    ShadowDocument,
    parse_reply,
)
from gateway.links.shadow.topics import Reply, ShadowTopics


def upper_bound(_: float, high: float) -> float:
    return high


def test_backoff_doubles_from_one_second_to_the_cap() -> None:
    backoff = Backoff(base_s=1, cap_s=120, rng=upper_bound)
    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 64, 120, 120]


def test_backoff_resets_after_a_stable_connection() -> None:
    backoff = Backoff(base_s=1, cap_s=120, reset_after_s=60, rng=upper_bound)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.next_delay(connected_for_s=61) == 1


def test_backoff_keeps_growing_after_a_short_lived_connection() -> None:
    backoff = Backoff(base_s=1, cap_s=120, reset_after_s=60, rng=upper_bound)
    backoff.next_delay()
    assert backoff.next_delay(connected_for_s=5) == 2


def test_backoff_reset_starts_over_once_connected() -> None:
    backoff = Backoff(base_s=1, cap_s=120, rng=upper_bound)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1


def test_dev_cloud_reconnects_on_the_shared_backoff() -> None:
    from gateway.devcloud.service import reconnect_backoff

    backoff = reconnect_backoff()
    ceilings = []
    for _ in range(5):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == [0.4, 0.8, 1.6, 2.0, 2.0]


def test_backoff_jitter_stays_within_zero_and_the_ceiling() -> None:
    backoff = Backoff(base_s=1, cap_s=120)
    for _ in range(50):
        assert 0 <= backoff.next_delay() <= 120


def test_delta_is_parsed_into_a_typed_model() -> None:
    reply = parse_reply(
        Reply.UPDATE_DELTA, b'{"version": 4, "state": {"led": true}, "clientToken": "t"}'
    )
    assert reply == DeltaMessage(version=4, state={"led": True}, client_token="t")


def test_document_without_delta_parses() -> None:
    reply = parse_reply(
        Reply.GET_ACCEPTED, b'{"version": 2, "state": {"reported": {"led": false}}}'
    )
    assert isinstance(reply, ShadowDocument) and reply.state.delta is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"state": {"led": true}}', "version"),
        (b'{"version": "x", "state": {}}', "version"),
    ],
)
def test_malformed_deltas_raise_payload_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_reply(Reply.UPDATE_DELTA, payload)


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = json.dumps({"version": 1, "state": {"x": "a" * MAX_PAYLOAD_BYTES}}).encode()
    with pytest.raises(PayloadError, match="exceeds"):
        parse_reply(Reply.UPDATE_DELTA, payload)


def test_payload_nested_deeper_than_aws_allows_is_refused() -> None:
    nested: dict[str, object] = {"v": 1}
    for _ in range(8):
        nested = {"n": nested}
    payload = json.dumps({"version": 1, "state": nested}).encode()
    with pytest.raises(PayloadError, match="nested deeper"):
        parse_reply(Reply.UPDATE_DELTA, payload)


def test_payload_error_shape_carries_no_values() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_reply(Reply.UPDATE_DELTA, b'{"version": "secret-value", "state": {}}')
    assert "secret-value" not in caught.value.shape


def test_classic_and_named_shadow_topics() -> None:
    assert ShadowTopics("pi").update == "$aws/things/pi/shadow/update"
    named = ShadowTopics("pi", "gpio")
    assert named.reply(Reply.UPDATE_DELTA) == "$aws/things/pi/shadow/name/gpio/update/delta"
    assert named.classify("$aws/things/pi/shadow/name/gpio/get/accepted") is Reply.GET_ACCEPTED
    assert named.classify("$aws/things/pi/shadow/update/delta") is None


def _levels(count: int) -> object:
    value: object = 1
    for _ in range(count):
        value = {"k": value}
    return value


def test_a_delta_with_seven_levels_of_state_is_refused() -> None:
    payload = json.dumps({"version": 1, "state": _levels(7)}).encode()
    with pytest.raises(PayloadError, match="nested deeper"):
        parse_reply(Reply.UPDATE_DELTA, payload)


def test_a_delta_and_a_document_with_six_levels_and_their_metadata_are_accepted() -> None:
    six = _levels(6)
    stamps = json.loads(json.dumps(six).replace("1", '{"timestamp": 1}'))
    delta = {"version": 1, "state": six, "metadata": stamps}
    assert parse_reply(Reply.UPDATE_DELTA, json.dumps(delta).encode())
    document = {
        "version": 1,
        "state": {"desired": six, "reported": six, "delta": six},
        "metadata": {"desired": stamps, "reported": stamps},
    }
    assert parse_reply(Reply.GET_ACCEPTED, json.dumps(document).encode())


def test_a_document_with_a_seven_level_section_is_refused() -> None:
    document = {"version": 1, "state": {"reported": _levels(7)}}
    with pytest.raises(PayloadError, match="nested deeper"):
        parse_reply(Reply.GET_ACCEPTED, json.dumps(document).encode())
