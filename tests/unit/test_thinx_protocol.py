"""THiNX's contract, pure: answers, messages, the check-in body and the status string."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.devcloud.thinx import mosquitto_password_hash
from gateway.links.thinx.protocol import (
    ConfigurationPush,
    FirmwareUpdate,
    Identity,
    OtherMessage,
    Refused,
    Registered,
    ThinxProtocolError,
    is_auth_failure,
    normalized_mac,
    parse_answer,
    parse_firmware_answer,
    parse_message,
    registration_body,
    render_status,
    unwrap_firmware,
)

IDENTITY = Identity(
    mac="B8:27:EB:00:00:01",
    firmware="edge-gateway-1.0",
    version="1.0",
    commit=None,
    owner="owner1",
    alias=None,
    platform="python:raspberry-pi:aarch64",
)


def test_registration_body_has_thinxlibs_fields_and_an_empty_udid_before_registration() -> None:
    body = registration_body(IDENTITY, udid="", status="ok")
    assert body == {
        "registration": {
            "mac": "B8:27:EB:00:00:01",
            "firmware": "edge-gateway-1.0",
            "version": "1.0",
            "owner": "owner1",
            "udid": "",
            "status": "ok",
            "platform": "python:raspberry-pi:aarch64",
        }
    }


def test_mac_is_normalized_to_upper_case_with_colons() -> None:
    assert normalized_mac("b827eb000001") == "B8:27:EB:00:00:01"


def test_ok_answer_gives_the_udid_and_auto_update() -> None:
    answer = parse_answer(
        b'{"registration": {"success": true, "status": "OK", "udid": "u-1", "owner": "o",'
        b' "alias": "pi", "auto_update": true, "timestamp": 1700000000}}'
    )
    assert answer == Registered("u-1", "o", "pi", True, 1700000000.0)


def test_firmware_update_answer_as_a_json_string_is_decoded() -> None:
    inner = {"registration": {"status": "FIRMWARE_UPDATE", "ott": "t", "version": "2", "udid": "u"}}
    answer = parse_answer(json.dumps(json.dumps(inner)).encode())
    assert answer == FirmwareUpdate(udid="u", version="2", ott="t", alias=None, mac=None)


@pytest.mark.parametrize(
    "reason", ["authentication_error", "apikey_not_found", "owner_found_but_no_key"]
)
def test_refusals_with_http_200_name_the_reason(reason: str) -> None:
    answer = parse_answer(json.dumps({"success": False, "response": reason}).encode())
    assert answer == Refused(reason) and is_auth_failure(reason)


def test_an_answer_without_registration_is_a_protocol_error() -> None:
    with pytest.raises(ThinxProtocolError):
        parse_answer(b'{"success": true}')


def test_a_deeply_nested_answer_is_refused_before_parsing() -> None:
    with pytest.raises(ThinxProtocolError, match="nested"):
        parse_answer(b"[" * 100 + b"]" * 100)


def test_firmware_answers_without_an_artifact_mean_nothing_to_do() -> None:
    assert parse_firmware_answer(b'{"success": false, "status": "UPDATE_NOT_FOUND"}').nothing_to_do
    refused = parse_firmware_answer(b'{"success": false, "response": "apikey_not_found"}')
    assert not refused.nothing_to_do and refused.reason == "apikey_not_found"


def test_configuration_push_is_read_plain_and_double_encoded() -> None:
    plain = json.dumps({"configuration": {"A": "1"}})
    assert parse_message(plain.encode()) == ConfigurationPush({"A": "1"})
    assert parse_message(json.dumps(plain).encode()) == ConfigurationPush({"A": "1"})


def test_a_registration_reply_is_noted_not_acted_on() -> None:
    assert parse_message(b'{"registration": {"status": "OK"}}') == OtherMessage("registration")


@pytest.mark.parametrize(
    "payload", [b"\xff\x00", b'"just a string"', b"[1, 2]", b'{"configuration": [1]}', b"{}"]
)
def test_malformed_or_unknown_messages_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ThinxProtocolError):
        parse_message(payload)


def test_status_renders_device_values_and_unknown_devices_as_a_question_mark() -> None:
    text = render_status(
        "{cpu} °C, door {door}, {gone}",
        {"cpu": 48.5, "door": True},
        errors=False,
        main_link_down=False,
    )
    assert text == "48.5 °C, door on, ?"


def test_status_marks_errors_with_e_and_a_main_link_down_with_w() -> None:
    text = render_status("ok", {}, errors=True, main_link_down=True)
    assert text == "ok #e #w"


def test_status_shows_a_running_update() -> None:
    assert render_status("ok", {}, errors=False, main_link_down=False, ota="2.0: downloading") == (
        "ok (update 2.0: downloading)"
    )


def test_mosquitto_password_hash_has_mosquitto_2s_pbkdf2_sha512_format() -> None:
    hashed = mosquitto_password_hash("key", salt=b"0123456789ab")
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert len(hashed.split("$")[-1]) == 88  # 64 bytes of SHA-512 in base64


def test_the_thinx_link_shows_in_the_metrics() -> None:
    from gateway.ops.metrics import render_prometheus

    status = {
        "links": {
            "thinx": {
                "registered": True,
                "connected": False,
                "last_checkin_at": 1700000000.5,
                "checkin_failures": 3,
            }
        }
    }
    text = render_prometheus(status)
    assert "edge_gateway_thinx_registered 1\n" in text
    assert "edge_gateway_thinx_mqtt_connected 0\n" in text
    assert "edge_gateway_thinx_last_checkin_timestamp_seconds 1700000000.5\n" in text
    assert "edge_gateway_thinx_checkin_failures_total 3\n" in text


def test_edge_gateway_status_shows_one_line_per_link() -> None:
    from gateway.cli.main import _link_line

    line = _link_line(
        "thinx",
        {
            "connected": True,
            "udid": "u-1",
            "last_checkin": "2026-12-01T10:00:00+00:00",
            "status": "door on #w",
            "checkin_error": None,
        },
    )
    assert line == (
        "thinx: connected, udid u-1, last check-in 2026-12-01T10:00:00+00:00, status door on #w"
    )


class _Core:
    """Just enough of the device core for the link's status string."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def add_listener(self, listener: object) -> None:
        pass


def test_update_progress_shows_in_the_status_while_it_runs(tmp_path: Path) -> None:
    from gateway.links.thinx.link import ThinxLink, ThinxLinkSettings

    settings = ThinxLinkSettings(
        url="https://thinx.example",
        owner="o",
        identity=IDENTITY,
        checkin_interval_s=60,
        retry_min_s=1,
        retry_max_s=2,
        status_template="door {door}",
        retain_status=False,
        on_configuration=None,
        on_configuration_timeout_s=1,
        state_dir=tmp_path,
    )
    link = ThinxLink(
        settings,
        engine=_Core({"door": True}),  # type: ignore[arg-type]
        api_key_file=tmp_path / "key",
        http=None,  # type: ignore[arg-type]
    )
    link.report_gateway_status("ota", {"state": "downloading", "version": "2.0", "error": None})
    assert link.status_text() == "door on (update 2.0: downloading)"
    link.report_gateway_status("ota", {"state": "applied", "version": "2.0", "error": None})
    assert link.status_text() == "door on"


def test_a_json_wrapped_firmware_is_unwrapped_as_thinx_serialises_it() -> None:
    answer = {"md5": "abc", "filesize": 3, "payload": {"type": "Buffer", "data": [0, 127, 255]}}
    wrapped = unwrap_firmware(answer)
    assert wrapped is not None
    assert wrapped.data == b"\x00\x7f\xff"
    assert wrapped.md5 == "abc"


@pytest.mark.parametrize(
    "answer",
    [{"success": False, "status": "UPDATE_NOT_FOUND"}, {"status": "OK"}, [1, 2], None],
)
def test_a_firmware_status_answer_is_not_an_artifact(answer: object) -> None:
    assert unwrap_firmware(answer) is None


@pytest.mark.parametrize(
    "answer",
    [
        {"md5": "abc", "payload": "AAEC"},
        {"md5": "abc", "payload": {"type": "Buffer", "data": [256]}},
        {"md5": "abc", "payload": {"type": "Buffer", "data": [-1]}},
        {"md5": "abc", "payload": {"type": "Buffer", "data": [True]}},
        {"md5": "abc", "payload": {"type": "Buffer", "data": "0,1"}},
        {"payload": {"type": "Buffer", "data": [1]}},
        {"md5": "abc", "filesize": 2, "payload": {"type": "Buffer", "data": [1]}},
    ],
)
def test_a_malformed_wrapped_firmware_is_refused(answer: object) -> None:
    with pytest.raises(ThinxProtocolError):
        unwrap_firmware(answer)
