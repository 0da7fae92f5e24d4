"""MindConnect's message shapes: time series batches, events, command parsing and answers."""

from __future__ import annotations

import json

from gateway.core.outbox import Event
from gateway.links.mindconnect.commands import (
    MAX_COMMAND_BYTES,
    Dropped,
    Refused,
    SetCommand,
    parse_command,
)
from gateway.links.mindconnect.payloads import (
    Batch,
    Topics,
    command_status,
    event_id,
    events_message,
    timeseries_batches,
    timestamp,
    value_text,
)


def test_timestamps_are_iso_8601_utc_with_milliseconds_and_z() -> None:
    assert timestamp(1_764_612_285.1239) == "2025-12-01T18:04:45.123Z"
    assert timestamp(0.0) == "1970-01-01T00:00:00.000Z"


def test_values_are_strings_in_json_spelling() -> None:
    assert [value_text(v) for v in (True, False, 0.5, 3, "on", [1, 0, 0.5])] == [
        "true",
        "false",
        "0.5",
        "3",
        "on",
        "[1,0,0.5]",
    ]


def test_topics_sit_under_the_tenant_and_client_id() -> None:
    topics = Topics("acme", "acme_pi1")
    assert topics.timeseries == "tc/acme/acme_pi1/o/mc_v3/ts"
    assert topics.events == "tc/acme/acme_pi1/o/mc_v3/e"
    assert topics.commands == "tc/acme/acme_pi1/i/cmd_v3/c"
    assert topics.command_status == "tc/acme/acme_pi1/o/cmd_v3/u"


def _points(count: int) -> list[Event]:
    return [Event(i + 1, "button", i % 2 == 0, 1_764_612_285.0 + i) for i in range(count)]


def test_a_point_becomes_one_timeseries_entry_with_its_data_point_and_quality() -> None:
    (batch,) = timeseries_batches(_points(1), {"button": "Pressed"}, 10_000)
    assert isinstance(batch, Batch)
    assert json.loads(batch.payload) == {
        "timeseries": [
            {
                "timestamp": "2025-12-01T18:04:45.000Z",
                "values": [{"dataPointId": "Pressed", "value": "true", "qualityCode": "0"}],
            }
        ]
    }


def test_batches_stay_within_the_message_size_and_keep_every_point_in_order() -> None:
    points = _points(50)
    batches = list(timeseries_batches(points, {}, 600))
    assert len(batches) > 1
    carried = []
    for batch in batches:
        assert isinstance(batch, Batch)
        assert len(batch.payload) <= 600
        entries = json.loads(batch.payload)["timeseries"]
        assert len(entries) == len(batch.points)
        carried += batch.points
    assert carried == points


def test_a_point_too_large_alone_is_handed_back_by_itself() -> None:
    big = Event(1, "text", "x" * 500, 1.0)
    items = list(timeseries_batches([*_points(1), big], {}, 300))
    assert isinstance(items[0], Batch)
    assert items[1] is big


def test_events_carry_the_documented_fields_and_a_stable_id() -> None:
    point = Event(7, "door", True, 1_764_612_285.0)
    message = json.loads(events_message([point], {"door": "Door"}, "acme_pi1", "MyType"))
    (event,) = message["events"]
    assert set(event) == {
        "id",
        "correlationId",
        "timestamp",
        "severity",
        "type",
        "description",
        "details",
    }
    assert event["id"] == str(event_id("acme_pi1", 7))
    assert event["correlationId"] == event_id("acme_pi1", 7).hex
    assert event["type"] == "MyType"
    assert event["description"] == "Door changed to true"


def test_a_command_answer_has_the_documented_shape() -> None:
    answer = json.loads(
        command_status(
            response_id="r1", request_id="q1", job_id="j1", status="EXECUTED", message="ok", at=0
        )
    )
    assert answer == {
        "id": "r1",
        "requestId": "q1",
        "data": {
            "timestamp": "1970-01-01T00:00:00.000Z",
            "jobId": "j1",
            "status": "EXECUTED",
            "response": {"message": "ok"},
        },
    }


def _command(payload: object, **extra: object) -> bytes:
    return json.dumps({"id": "q1", "data": {"jobId": "j1", "payload": payload}, **extra}).encode()


def test_a_set_command_is_read() -> None:
    parsed = parse_command(_command({"commandType": "set", "device": "led", "value": True}))
    assert parsed == SetCommand("q1", "j1", "led", True)


def test_a_payload_sent_as_a_json_string_is_read_too() -> None:
    payload = json.dumps({"commandType": "set", "device": "fan", "value": 0.5})
    assert parse_command(_command(payload)) == SetCommand("q1", "j1", "fan", 0.5)


def test_an_unknown_command_type_is_refused_with_its_ids() -> None:
    parsed = parse_command(_command({"commandType": "firmware_update"}))
    assert isinstance(parsed, Refused)
    assert (parsed.request_id, parsed.job_id) == ("q1", "j1")
    assert "commandType" in parsed.reason


def test_a_set_without_a_value_is_refused() -> None:
    parsed = parse_command(_command({"commandType": "set", "device": "led"}))
    assert isinstance(parsed, Refused)


def test_a_command_without_an_id_is_dropped() -> None:
    parsed = parse_command(b'{"data": {"jobId": "j1", "payload": {}}}')
    assert isinstance(parsed, Dropped)


def test_hostile_commands_are_dropped_without_parsing_them_whole() -> None:
    assert isinstance(parse_command(b"[" * 100_000), Dropped)
    assert isinstance(parse_command(b" " * (MAX_COMMAND_BYTES + 1)), Dropped)
    assert isinstance(parse_command(b"\xff\xfe"), Dropped)
    assert isinstance(parse_command(b"42"), Dropped)


def test_a_deeply_nested_payload_string_is_refused() -> None:
    parsed = parse_command(_command("[" * 50 + "]" * 50))
    assert isinstance(parsed, Refused)


def test_each_links_figures_are_exported_with_its_name_as_a_label() -> None:
    from gateway.ops.metrics import render_prometheus

    status = {
        "links": {
            "mindconnect": {
                "connected": True,
                "queue_depth": 7,
                "last_publish_at": None,
                "commands_failed": 2,
            }
        }
    }
    lines = render_prometheus(status).splitlines()
    assert 'edge_gateway_link_connected{link="mindconnect"} 1' in lines
    assert 'edge_gateway_link_queue_depth{link="mindconnect"} 7' in lines
    assert 'edge_gateway_link_commands_failed_total{link="mindconnect"} 2' in lines
    assert "# TYPE edge_gateway_link_commands_failed_total counter" in lines
    assert not any("last_publish" in line for line in lines)  # unknown: left out
