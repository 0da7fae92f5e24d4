"""The dev cloud's MindConnect store and tenant as pure logic: payload shapes, bounded history,
latest values by observation time, token lifetime on an injected clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.devcloud.mindconnect import (
    MAX_MESSAGE_BYTES,
    TOKEN_LIFETIME_S,
    MindConnectAuthError,
    MindConnectRequestError,
    MindConnectStore,
    MindConnectTenant,
)

TS = "tc/devtenant/devtenant_pi1/o/mc_v3/ts"
EVENTS = "tc/devtenant/devtenant_pi1/o/mc_v3/e"
ANSWERS = "tc/devtenant/devtenant_pi1/o/cmd_v3/u"
PI1 = "devtenant_pi1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ts(value: str, timestamp: str = "2026-12-01T10:00:00.000Z", point: str = "t") -> bytes:
    values = [{"dataPointId": point, "value": value, "qualityCode": "0"}]
    return json.dumps({"timeseries": [{"timestamp": timestamp, "values": values}]}).encode()


def test_time_series_points_are_kept_in_arrival_order() -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(TS, ts("1")) == "ts"
    assert store.receive(TS, ts("2")) == "ts"
    assert [p.value for p in store.points(PI1)] == ["1", "2"]


def test_latest_value_follows_observation_time_not_arrival() -> None:
    store = MindConnectStore("devtenant")
    store.receive(TS, ts("new", "2026-12-01T10:00:02.000Z"))
    store.receive(TS, ts("old", "2026-12-01T10:00:01.000Z"))
    assert store.latest(PI1)["t"].value == "new"


def test_history_is_bounded_per_agent() -> None:
    store = MindConnectStore("devtenant")
    for index in range(2100):
        store.receive(TS, ts(str(index)))
    points = store.points(PI1)
    assert len(points) == 2000
    assert points[-1].value == "2099"


def test_microsecond_timestamps_of_siemens_sample_are_accepted() -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(TS, ts("1", "2026-12-01T10:00:00.123456Z")) == "ts"
    assert store.latest(PI1)["t"].observed_at.microsecond == 123456


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"timeseries": "x"}',
        ts("1", "2026-12-01T10:00:00+01:00"),
        ts("1", "2026-13-01T10:00:00Z"),
        json.dumps({"timeseries": [{"timestamp": "2026-12-01T10:00:00Z", "values": [
            {"dataPointId": "", "value": "1", "qualityCode": "0"}]}]}).encode(),
        json.dumps({"timeseries": [{"timestamp": "2026-12-01T10:00:00Z", "values": [
            {"dataPointId": "t", "value": "1", "qualityCode": 0}]}]}).encode(),
    ],
)  # fmt: skip
def test_a_time_series_of_another_shape_is_refused_and_kept_as_a_refusal(payload: bytes) -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(TS, payload) is None
    assert store.points(PI1) == []
    (refusal,) = store.refusals(PI1)
    assert refusal.reason
    assert refusal.size == len(payload)


def test_an_oversized_message_is_refused() -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(TS, b" " * (MAX_MESSAGE_BYTES + 1)) is None
    assert "larger than" in store.refusals(PI1)[0].reason


@pytest.mark.parametrize("severity", ["20", 20])
def test_events_accept_severity_as_digits_or_number(severity: object) -> None:
    store = MindConnectStore("devtenant")
    event = {"timestamp": "2026-12-01T10:00:00.000Z", "type": "Press", "severity": severity}
    assert store.receive(EVENTS, json.dumps({"events": [event]}).encode()) == "event"
    assert store.events(PI1)[0].fields["severity"] == severity


@pytest.mark.parametrize(
    "event",
    [
        {"type": "Press"},
        {"timestamp": "2026-12-01T10:00:00.000Z"},
        {"timestamp": "2026-12-01T10:00:00.000Z", "type": "Press", "severity": "high"},
        {"timestamp": "2026-12-01T10:00:00.000Z", "type": "Press", "details": [1]},
    ],
)
def test_an_event_of_another_shape_is_refused(event: dict[str, object]) -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(EVENTS, json.dumps({"events": [event]}).encode()) is None
    assert store.events(PI1) == []


def answer(status: str) -> bytes:
    data = {"timestamp": "2026-12-01T10:00:00.000Z", "jobId": "j1", "status": status}
    return json.dumps({"id": "a", "requestId": "c1", "data": data}).encode()


@pytest.mark.parametrize("status", ["EXECUTED", "FAILED", "EXECUTING"])
def test_command_answers_are_found_by_request_id(status: str) -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(ANSWERS, answer(status)) == "answer"
    found = store.answer_to("c1")
    assert found is not None
    assert found.status == status


def test_an_answer_with_an_unknown_status_is_refused() -> None:
    store = MindConnectStore("devtenant")
    assert store.receive(ANSWERS, answer("DONE")) is None
    assert store.answer_to("c1") is None


def test_messages_of_another_tenant_or_direction_are_ignored() -> None:
    store = MindConnectStore("devtenant")
    assert store.receive("tc/other/other_pi1/o/mc_v3/ts", ts("1")) is None
    assert store.receive("tc/devtenant/devtenant_pi1/i/cmd_v3/c", ts("1")) is None
    assert store.agents() == []


# --- the tenant -----------------------------------------------------------------------------------


def test_a_token_expires_after_its_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    tenant = MindConnectTenant(tmp_path, clock=clock)
    token = tenant.issue_token(tenant.auth_key(), tenant.token_request())["access_token"]
    clock.now += TOKEN_LIFETIME_S - 1
    tenant.check_token(f"Bearer {token}")
    clock.now += 2
    with pytest.raises(MindConnectAuthError):
        tenant.check_token(f"Bearer {token}")


def test_the_app_credential_survives_a_restart(tmp_path: Path) -> None:
    first = MindConnectTenant(tmp_path)
    second = MindConnectTenant(tmp_path)
    assert (second.app_id, second.app_secret) == (first.app_id, first.app_secret)
    assert second.registration_code == first.registration_code
    assert (tmp_path / "app.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("tenant", ["", "Dev", "dev_tenant", "dev-tenant", "a" * 33])
def test_a_tenant_name_that_cannot_form_ids_is_refused(tmp_path: Path, tenant: str) -> None:
    from gateway.devcloud.mindconnect import MindConnectError

    with pytest.raises(MindConnectError):
        MindConnectTenant(tmp_path, tenant=tenant)


def test_the_token_request_must_name_the_apps_own_tenant(tmp_path: Path) -> None:
    tenant = MindConnectTenant(tmp_path)
    with pytest.raises(MindConnectAuthError):
        tenant.issue_token(tenant.auth_key(), tenant.token_request() | {"hostTenant": "x"})
    with pytest.raises(MindConnectRequestError):
        tenant.issue_token(tenant.auth_key(), tenant.token_request() | {"appName": 1})
