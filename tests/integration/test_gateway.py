"""The gateway end to end: real mosquitto (mutual TLS), the dev cloud shadow service, gpiozero's
MockFactory. The gateway runs in-process so the tests can look at its mock pins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService
from tests.integration.harness import admin_client, reported

pytestmark = pytest.mark.integration


async def test_desired_drives_the_pin_and_is_reported_and_cleared(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        await shadow_client.update(thing, {"desired": {"led": True, "relay": True, "fan": 0.25}})
        doc = await shadow_client.wait_for(thing, reported("fan", 0.25), timeout=5)
        assert doc["state"]["reported"]["led"] is True
        assert doc["state"]["reported"]["relay"] is True
        assert "desired" not in doc["state"] or not doc["state"]["desired"]  # cleared
        assert running.pin(17).state == 1
        assert running.pin(27).state == 0  # active_high: false drives the pin low for on
        assert running.pin(18).state == pytest.approx(0.25)


async def test_button_press_is_reported(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        running.pin(4).drive_low()  # pull-up button: pressed pulls the pin low
        await shadow_client.wait_for(thing, reported("button", True), timeout=5)
        running.pin(4).drive_high()
        await shadow_client.wait_for(thing, reported("button", False), timeout=5)


async def test_burst_of_presses_ends_with_the_final_value_reported(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        for _ in range(25):
            running.pin(4).drive_low()
            running.pin(4).drive_high()
        running.pin(4).drive_low()
        doc = await shadow_client.wait_for(thing, reported("button", True), timeout=5)
        # 51 edges in well under 50 ms coalesce into a handful of updates, not 51.
        assert doc["version"] < 20


async def test_desired_set_while_the_gateway_was_down_is_applied_at_start(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    await shadow_client.update(thing, {"desired": {"led": True}})
    async with start_gateway(thing) as running:
        await shadow_client.wait_for(thing, reported("led", True), timeout=5)
        assert running.pin(17).state == 1


async def test_bad_desired_value_leaves_the_pin_alone_and_reports_the_error(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        with capture_logs() as logs:
            await shadow_client.update(thing, {"desired": {"fan": 7, "button": True}})

            def has_errors(doc: dict[str, Any]) -> bool:
                errors = doc["state"].get("reported", {}).get("gateway", {}).get("errors", {})
                return {"fan", "button"} <= set(errors)

            doc = await shadow_client.wait_for(thing, has_errors, timeout=5)
        errors = doc["state"]["reported"]["gateway"]["errors"]
        assert "out of range" in errors["fan"]
        assert "read-only" in errors["button"]
        assert running.pin(18).state == 0
        assert any(entry["event"] == "desired_rejected" for entry in logs)
        # A valid value clears the error.
        await shadow_client.update(thing, {"desired": {"fan": 0.5}})

        def fan_error_gone(doc: dict[str, Any]) -> bool:
            errors = doc["state"].get("reported", {}).get("gateway", {}).get("errors", {})
            return "fan" not in errors and doc["state"]["reported"].get("fan") == 0.5

        await shadow_client.wait_for(thing, fan_error_gone, timeout=5)


async def test_stale_delta_is_ignored(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    async with start_gateway(thing) as running:
        await shadow_client.update(thing, {"desired": {"led": True}})
        await shadow_client.wait_for(thing, reported("led", True), timeout=5)
        newest = running.gateway.shadow.reconciler.newest_version
        stale = {"version": 1, "timestamp": 0, "state": {"led": False}}
        await _publish_as_admin(broker, f"$aws/things/{thing}/shadow/update/delta", stale)
        await _until(lambda: running.gateway.shadow.counters["deltas_stale"] == 1)
        assert running.pin(17).state == 1
        assert newest >= 2


def _nested(depth: int) -> dict[str, Any]:
    return {"x": _nested(depth - 1)} if depth > 1 else {"x": 1}


# Each would turn the LED on if it were not dropped (but the truncated one).
BAD_DELTAS = {
    "truncated": b'{"state": {"led": tru',
    "over_128_kb": json.dumps(
        {"version": 10**6, "state": {"led": True, "pad": "x" * 131_072}}
    ).encode(),
    "nested_deeper_than_6": json.dumps(
        {"version": 10**6, "state": {"led": True, "deep": _nested(7)}}
    ).encode(),
}


@pytest.mark.parametrize("payload", BAD_DELTAS.values(), ids=BAD_DELTAS.keys())
async def test_malformed_delta_payload_is_dropped_without_touching_a_pin(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
    payload: bytes,
) -> None:
    async with start_gateway(thing) as running:
        with capture_logs() as logs:
            await _publish_raw_as_admin(broker, f"$aws/things/{thing}/shadow/update/delta", payload)
            await _until(lambda: any(e["event"] == "payload_dropped" for e in logs))
        assert running.pin(17).state == 0
        # ...and the gateway keeps working.
        await shadow_client.update(thing, {"desired": {"led": True}})
        await shadow_client.wait_for(thing, reported("led", True), timeout=5)


async def test_named_shadow_is_kept_in_sync(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing, extra="shadow: {name: gpio}\n") as running:
        await shadow_client.update(thing, {"desired": {"led": True}}, shadow_name="gpio")
        await shadow_client.wait_for(thing, reported("led", True), timeout=5, shadow_name="gpio")
        assert running.pin(17).state == 1
        assert await shadow_client.get(thing) is None  # the classic shadow is untouched


async def test_restore_applies_the_last_reported_value_at_start(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    devices = "  relay: {type: OutputDevice, pin: 27, restore: true}\n"
    await shadow_client.update(thing, {"reported": {"relay": True}})
    async with start_gateway(thing, devices=devices) as running:
        await _until(lambda: running.pin(27).state == 1)
        doc = await shadow_client.get(thing)
        assert doc is not None and doc["state"]["reported"]["relay"] is True


async def test_key_material_never_appears_in_logs(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    with capture_logs() as logs:
        async with start_gateway(thing):
            await shadow_client.update(thing, {"desired": {"led": True}})
            await shadow_client.wait_for(thing, reported("led", True), timeout=5)
    text = json.dumps(logs, default=str)
    assert "PRIVATE KEY" not in text
    assert any(entry["event"] == "mqtt_connected" for entry in logs)


async def test_a_run_of_deltas_each_drives_the_pin_and_is_reported(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    """Every delta of a run lands: desired -> pin -> reported, one after another. (How long a
    round trip takes is the benchmark's to measure: ``python -m bench``, BENCHMARKS.md.)"""
    async with start_gateway(thing) as running:
        for index in range(40):
            level = round((index % 100) / 100 + 0.005, 3)
            await shadow_client.update(thing, {"desired": {"fan": level}})
            await shadow_client.wait_for(thing, reported("fan", level), timeout=5)
            assert running.pin(18).state == pytest.approx(level)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def _publish_as_admin(broker: MosquittoBroker, topic: str, payload: dict[str, Any]) -> None:
    await _publish_raw_as_admin(broker, topic, json.dumps(payload).encode())


async def _publish_raw_as_admin(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    async with admin_client(broker) as client:
        await client.publish(topic, payload, qos=1)
