"""AWS Device Shadow semantics of the pure ShadowStore."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.devcloud.shadowdoc import (
    Response,
    ShadowStore,
    compute_delta,
    parse_topic,
)

THING = "lamp-1"
PREFIX = f"$aws/things/{THING}/shadow"
NOW = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> ShadowStore:
    return ShadowStore(clock=clock)


def send(store: ShadowStore, topic: str, body: Any) -> list[Response]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return store.handle(topic, raw)


def update(store: ShadowStore, body: Any, prefix: str = PREFIX) -> dict[str, Response]:
    """Send an update; responses keyed by the last two topic levels ("update/accepted")."""
    return {r.topic.removeprefix(prefix + "/"): r for r in send(store, f"{prefix}/update", body)}


def rejected(store: ShadowStore, body: Any) -> dict[str, Any]:
    responses = update(store, body)
    assert list(responses) == ["update/rejected"]
    return responses["update/rejected"].payload


# --- topics -----------------------------------------------------------------------------------


def test_classic_and_named_topics_parse() -> None:
    classic = parse_topic(f"{PREFIX}/get")
    named = parse_topic(f"{PREFIX}/name/cfg/delete")
    assert classic is not None and (classic.thing, classic.name, classic.operation) == (
        THING,
        None,
        "get",
    )
    assert named is not None and (named.name, named.operation) == ("cfg", "delete")


@pytest.mark.parametrize(
    "topic",
    [
        f"{PREFIX}/update/accepted",
        f"{PREFIX}/update/delta",
        f"{PREFIX}/name/cfg/get/accepted",
        "$aws/things/x/jobs/get",
        "things/lamp-1/shadow/update",
        "$aws/things//shadow/update",
    ],
)
def test_non_request_topics_are_ignored(store: ShadowStore, topic: str) -> None:
    assert send(store, topic, {"state": {"desired": {"on": True}}}) == []


# --- update -----------------------------------------------------------------------------------


def test_first_update_creates_version_1(store: ShadowStore) -> None:
    accepted = update(store, {"state": {"reported": {"on": False}}})["update/accepted"].payload
    assert accepted["version"] == 1
    assert store.document(THING) is not None


def test_each_accepted_update_increments_version(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    update(store, {"state": {"reported": {"on": False}}})
    accepted = update(store, {"state": {"desired": {"on": True}}})["update/accepted"].payload
    assert accepted["version"] == 3


def test_accepted_echoes_requested_state_with_metadata(store: ShadowStore) -> None:
    body = {"state": {"desired": {"on": True, "led": {"r": 1}}}, "clientToken": "t1"}
    accepted = update(store, body)["update/accepted"].payload
    assert accepted == {
        "state": {"desired": {"on": True, "led": {"r": 1}}},
        "metadata": {"desired": {"on": {"timestamp": NOW}, "led": {"r": {"timestamp": NOW}}}},
        "version": 1,
        "timestamp": NOW,
        "clientToken": "t1",
    }


def test_null_key_deletes_it(store: ShadowStore) -> None:
    update(store, {"state": {"desired": {"on": True, "level": 3}}})
    update(store, {"state": {"desired": {"level": None}}})
    doc = store.document(THING)
    assert doc is not None
    assert doc["state"]["desired"] == {"on": True}
    assert doc["metadata"]["desired"] == {"on": {"timestamp": NOW}}


def test_desired_null_clears_whole_section(store: ShadowStore) -> None:
    update(store, {"state": {"desired": {"on": True}, "reported": {"on": False}}})
    update(store, {"state": {"desired": None}})
    doc = store.document(THING)
    assert doc is not None
    assert "desired" not in doc["state"]
    assert "delta" not in doc["state"]
    assert doc["state"]["reported"] == {"on": False}


def test_nested_objects_merge(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"led": {"r": 1, "g": 2}}}})
    update(store, {"state": {"reported": {"led": {"g": 5, "b": 9}}}})
    doc = store.document(THING)
    assert doc is not None
    assert doc["state"]["reported"] == {"led": {"r": 1, "g": 5, "b": 9}}


def test_arrays_are_replaced_whole(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"seq": [1, 2, 3]}}})
    update(store, {"state": {"reported": {"seq": [4]}}})
    doc = store.document(THING)
    assert doc is not None
    assert doc["state"]["reported"] == {"seq": [4]}
    assert doc["metadata"]["reported"] == {"seq": [{"timestamp": NOW}]}


def test_untouched_keys_keep_their_metadata_timestamp(store: ShadowStore, clock: Clock) -> None:
    update(store, {"state": {"reported": {"a": 1, "b": 1}}})
    clock.now += 60
    update(store, {"state": {"reported": {"b": 2}}})
    doc = store.document(THING)
    assert doc is not None
    assert doc["metadata"]["reported"] == {"a": {"timestamp": NOW}, "b": {"timestamp": NOW + 60}}
    assert doc["timestamp"] == NOW + 60


def test_matching_version_is_accepted(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    responses = update(store, {"state": {"desired": {"on": True}}, "version": 1})
    assert responses["update/accepted"].payload["version"] == 2


def test_version_conflict_is_rejected_with_409(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    update(store, {"state": {"reported": {"on": True}}})
    payload = rejected(
        store, {"state": {"desired": {"on": True}}, "version": 1, "clientToken": "c"}
    )
    assert payload == {
        "code": 409,
        "message": "Version conflict",
        "clientToken": "c",
        "timestamp": NOW,
    }
    doc = store.document(THING)
    assert doc is not None and doc["version"] == 2


def test_version_on_missing_shadow_conflicts(store: ShadowStore) -> None:
    assert rejected(store, {"state": {"desired": {"on": True}}, "version": 1})["code"] == 409


def test_invalid_json_is_rejected_with_400(store: ShadowStore) -> None:
    payload = rejected(store, b"{not json")
    assert (payload["code"], payload["message"]) == (400, "Payload contains invalid json")


def test_non_utf8_payload_is_rejected_with_415(store: ShadowStore) -> None:
    assert rejected(store, b'{"state": "\xff"}')["code"] == 415


def test_missing_state_is_rejected(store: ShadowStore) -> None:
    payload = rejected(store, {"clientToken": "x"})
    assert (payload["code"], payload["message"]) == (400, "Missing required node: state")


@pytest.mark.parametrize("state", [None, 5, "on", [1]])
def test_non_object_state_is_rejected(store: ShadowStore, state: object) -> None:
    payload = rejected(store, {"state": state})
    assert (payload["code"], payload["message"]) == (400, "State node must be an object")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("desired", "Desired node must be an object"),
        ("reported", "Reported node must be an object"),
    ],
)
def test_non_object_section_is_rejected(store: ShadowStore, section: str, message: str) -> None:
    payload = rejected(store, {"state": {section: [1, 2]}})
    assert (payload["code"], payload["message"]) == (400, message)


def test_unknown_state_node_is_rejected(store: ShadowStore) -> None:
    payload = rejected(store, {"state": {"delta": {"on": True}}})
    assert (payload["code"], payload["message"]) == (400, "State contains an invalid node")


@pytest.mark.parametrize("version", ["1", 1.5, True, None])
def test_non_integer_version_is_rejected(store: ShadowStore, version: object) -> None:
    payload = rejected(store, {"state": {"desired": {"on": True}}, "version": version})
    assert (payload["code"], payload["message"]) == (400, "Invalid version")


def nested(levels: int) -> dict[str, Any]:
    """An object with ``levels`` levels of nesting: {"k": {"k": ... 1}}."""
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


def test_six_levels_of_nesting_are_accepted(store: ShadowStore) -> None:
    assert "update/accepted" in update(store, {"state": {"desired": nested(6)}})


def test_seven_levels_of_nesting_are_rejected(store: ShadowStore) -> None:
    payload = rejected(store, {"state": {"reported": nested(7)}})
    assert payload == {
        "code": 400,
        "message": "JSON contains too many levels of nesting; maximum is 6",
        "timestamp": NOW,
    }


def test_section_over_8kb_is_rejected_with_413(store: ShadowStore) -> None:
    payload = rejected(store, {"state": {"reported": {"blob": "x" * 8200}}})
    assert (payload["code"], payload["message"]) == (
        413,
        "The payload exceeds the maximum size allowed",
    )
    assert store.document(THING) is None


def test_size_limit_applies_to_merged_section(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"a": "x" * 5000}}})
    assert rejected(store, {"state": {"reported": {"b": "y" * 5000}}})["code"] == 413
    doc = store.document(THING)
    assert doc is not None and doc["state"]["reported"] == {"a": "x" * 5000}


def test_client_token_over_64_bytes_is_rejected(store: ShadowStore) -> None:
    payload = rejected(store, {"state": {"desired": {}}, "clientToken": "é" * 33})
    assert (payload["code"], payload["message"]) == (400, "Invalid clientToken")
    assert "clientToken" not in payload


def test_client_token_of_64_bytes_is_echoed(store: ShadowStore) -> None:
    token = "t" * 64
    responses = update(store, {"state": {"desired": {"on": True}}, "clientToken": token})
    assert {r.payload["clientToken"] for r in responses.values()} == {token}


def test_rejected_update_leaves_shadow_unchanged(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    before = store.document(THING)
    rejected(store, {"state": {"reported": "off"}})
    assert store.document(THING) == before


# --- delta --------------------------------------------------------------------------------------


def test_delta_published_when_desired_differs_from_reported(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False, "level": 1}}})
    responses = update(store, {"state": {"desired": {"on": True, "level": 1}}, "clientToken": "d"})
    assert responses["update/delta"].payload == {
        "version": 2,
        "timestamp": NOW,
        "state": {"on": True},
        "metadata": {"on": {"timestamp": NOW}},
        "clientToken": "d",
    }


def test_no_delta_when_reported_matches_desired(store: ShadowStore) -> None:
    update(store, {"state": {"desired": {"on": True}}})
    responses = update(store, {"state": {"reported": {"on": True}}})
    assert "update/delta" not in responses


def test_delta_includes_desired_keys_missing_from_reported(store: ShadowStore) -> None:
    responses = update(store, {"state": {"desired": {"on": True}}})
    assert responses["update/delta"].payload["state"] == {"on": True}


def test_delta_ignores_reported_keys_missing_from_desired(store: ShadowStore) -> None:
    update(store, {"state": {"desired": {"on": True}}})
    responses = update(store, {"state": {"reported": {"on": True, "temp": 21}}})
    assert "update/delta" not in responses


def test_delta_recurses_into_nested_objects() -> None:
    desired = {"led": {"r": 1, "g": 2}, "mode": "auto"}
    reported = {"led": {"r": 1, "g": 3}, "mode": "auto"}
    assert compute_delta(desired, reported) == {"led": {"g": 2}}


def test_delta_leaves_out_nested_objects_with_no_difference() -> None:
    assert compute_delta({"led": {"r": 1}}, {"led": {"r": 1, "g": 2}}) == {}


def test_delta_compares_arrays_whole() -> None:
    assert compute_delta({"seq": [1, 2]}, {"seq": [1, 3]}) == {"seq": [1, 2]}


def test_delta_distinguishes_true_from_one() -> None:
    assert compute_delta({"on": True}, {"on": 1}) == {"on": True}


def test_delta_metadata_covers_only_delta_keys(store: ShadowStore, clock: Clock) -> None:
    update(store, {"state": {"desired": {"led": {"r": 1, "g": 2}}}})
    clock.now += 5
    responses = update(store, {"state": {"reported": {"led": {"r": 1}}}})
    delta = responses["update/delta"].payload
    assert delta["state"] == {"led": {"g": 2}}
    assert delta["metadata"] == {"led": {"g": {"timestamp": NOW}}}


# --- documents ----------------------------------------------------------------------------------


def test_documents_has_previous_and_current(store: ShadowStore, clock: Clock) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    clock.now += 1
    responses = update(store, {"state": {"desired": {"on": True}}, "clientToken": "doc"})
    assert responses["update/documents"].payload == {
        "previous": {
            "state": {"reported": {"on": False}},
            "metadata": {"reported": {"on": {"timestamp": NOW}}},
            "version": 1,
        },
        "current": {
            "state": {"desired": {"on": True}, "reported": {"on": False}},
            "metadata": {
                "desired": {"on": {"timestamp": NOW + 1}},
                "reported": {"on": {"timestamp": NOW}},
            },
            "version": 2,
        },
        "timestamp": NOW + 1,
        "clientToken": "doc",
    }


def test_documents_previous_is_null_for_a_new_shadow(store: ShadowStore) -> None:
    responses = update(store, {"state": {"reported": {"on": False}}})
    assert responses["update/documents"].payload["previous"] is None


def test_update_responses_come_in_order_accepted_delta_documents(store: ShadowStore) -> None:
    responses = send(store, f"{PREFIX}/update", {"state": {"desired": {"on": True}}})
    assert [r.topic for r in responses] == [
        f"{PREFIX}/update/accepted",
        f"{PREFIX}/update/delta",
        f"{PREFIX}/update/documents",
    ]


# --- get ---------------------------------------------------------------------------------------


def test_get_on_missing_shadow_is_404(store: ShadowStore) -> None:
    [response] = send(store, f"{PREFIX}/get", {"clientToken": "g"})
    assert response.topic == f"{PREFIX}/get/rejected"
    assert response.payload == {
        "code": 404,
        "message": f"No shadow exists with name: '{THING}'",
        "timestamp": NOW,
        "clientToken": "g",
    }


def test_get_returns_state_delta_metadata_and_version(store: ShadowStore, clock: Clock) -> None:
    update(store, {"state": {"desired": {"on": True}, "reported": {"on": False, "t": 20}}})
    clock.now += 3
    [response] = send(store, f"{PREFIX}/get", {"clientToken": "g"})
    assert response.topic == f"{PREFIX}/get/accepted"
    assert response.payload == {
        "state": {
            "desired": {"on": True},
            "reported": {"on": False, "t": 20},
            "delta": {"on": True},
        },
        "metadata": {
            "desired": {"on": {"timestamp": NOW}},
            "reported": {"on": {"timestamp": NOW}, "t": {"timestamp": NOW}},
        },
        "version": 1,
        "timestamp": NOW + 3,
        "clientToken": "g",
    }


def test_get_omits_empty_sections(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    [response] = store.handle(f"{PREFIX}/get", b"")
    assert set(response.payload["state"]) == {"reported"}
    assert set(response.payload["metadata"]) == {"reported"}


# --- delete ------------------------------------------------------------------------------------


def test_delete_returns_version_and_removes_shadow(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    [response] = send(store, f"{PREFIX}/delete", {"clientToken": "del"})
    assert response.topic == f"{PREFIX}/delete/accepted"
    assert response.payload == {"version": 1, "timestamp": NOW, "clientToken": "del"}
    assert store.document(THING) is None


def test_delete_missing_shadow_is_404(store: ShadowStore) -> None:
    [response] = store.handle(f"{PREFIX}/delete", b"")
    assert response.topic == f"{PREFIX}/delete/rejected"
    assert response.payload["code"] == 404


def test_recreated_shadow_continues_version(store: ShadowStore) -> None:
    update(store, {"state": {"reported": {"on": False}}})
    update(store, {"state": {"reported": {"on": True}}})
    store.handle(f"{PREFIX}/delete", b"")
    accepted = update(store, {"state": {"reported": {"on": True}}})["update/accepted"].payload
    assert accepted["version"] == 3
    doc = store.document(THING)
    assert doc is not None and doc["state"] == {"reported": {"on": True}}


# --- named shadows -----------------------------------------------------------------------------


def test_named_shadow_is_separate_from_classic(store: ShadowStore) -> None:
    named = f"{PREFIX}/name/config"
    responses = update(store, {"state": {"desired": {"rate": 5}}}, prefix=named)
    assert responses["update/accepted"].topic == f"{named}/update/accepted"
    assert store.document(THING) is None
    doc = store.document(THING, "config")
    assert doc is not None and doc["state"]["desired"] == {"rate": 5}


def test_named_shadow_404_names_the_shadow(store: ShadowStore) -> None:
    [response] = store.handle(f"{PREFIX}/name/config/get", b"")
    assert response.topic == f"{PREFIX}/name/config/get/rejected"
    assert response.payload["message"] == "No shadow exists with name: 'config'"


# --- persistence -------------------------------------------------------------------------------


def test_snapshot_restore_round_trips(store: ShadowStore, clock: Clock) -> None:
    update(store, {"state": {"desired": {"on": True}, "reported": {"on": False}}})
    update(store, {"state": {"desired": {"rate": 1}}}, prefix=f"{PREFIX}/name/cfg")
    snapshot = json.loads(json.dumps(store.snapshot()))
    copy = ShadowStore(clock=clock)
    copy.restore(snapshot)
    assert copy.document(THING) == store.document(THING)
    assert copy.document(THING, "cfg") == store.document(THING, "cfg")


def test_restore_rejects_unknown_format(store: ShadowStore) -> None:
    with pytest.raises(ValueError, match="format"):
        store.restore({"format": 99, "shadows": []})
