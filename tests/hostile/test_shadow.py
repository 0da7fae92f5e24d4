"""Hostile desired values and deltas (issue 19), against real mosquitto (mutual TLS), the dev
cloud's shadow service and an in-process gateway on gpiozero's MockFactory.

Each test plays the attack as it was found, then checks that the daemon still lives (a normal
desired write is still applied), that no pin moved on the bad input, and that pins, reported
and desired agree in the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService
from gateway.devcloud.shadowdoc import MAX_SECTION_BYTES
from gateway.links.shadow.protocol import MAX_QUEUED_REQUESTS
from tests.integration.harness import admin_client, reported, until

pytestmark = pytest.mark.integration

FAN_PIN = 18
LED_PIN = 17


def errors_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["state"].get("reported", {}).get("gateway", {}).get("errors", {}) or {}


async def still_alive(shadow_client: ShadowClient, running: Any, thing: str, level: float) -> None:
    """The daemon still follows the cloud: a normal desired fan level reaches the pin."""
    await shadow_client.update(thing, {"desired": {"fan": level}})
    await shadow_client.wait_for(thing, reported("fan", level), timeout=5)
    assert running.pin(FAN_PIN).state == pytest.approx(level)


async def test_desired_401_digit_number_is_refused_and_the_daemon_survives_restarts(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    huge = int("9" * 401)
    await shadow_client.update(thing, {"desired": {"fan": huge}})
    for _ in range(2):  # the value stays desired: every start meets it again
        async with start_gateway(thing) as running:
            doc = await shadow_client.wait_for(thing, lambda d: "fan" in errors_of(d), timeout=5)
            assert "too large" in errors_of(doc)["fan"] or "inf" in errors_of(doc)["fan"]
            assert running.pin(FAN_PIN).state == 0
            await asyncio.sleep(1.5)  # the old crash came about a second after start
            assert not running.gateway.shadow.counters["messages_dropped"]
            assert running.gateway.shadow.connected
    async with start_gateway(thing) as running:
        await still_alive(shadow_client, running, thing, 0.5)
        doc = await shadow_client.wait_for(thing, lambda d: "fan" not in errors_of(d), timeout=5)
        assert doc["state"].get("desired", {}).get("fan") is None


def _nested(depth: int) -> str:
    return '{"x":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "payload",
    [
        ('{"version": 1000000, "state": {"led": true, "deep": ' + _nested(500) + "}}").encode(),
        ('{"version": 1000000, "state": {"led": true, "deep": ' + _nested(100_000) + "}}")[
            :130_000
        ].encode(),
    ],
    ids=["nested_500_deep", "nested_100000_deep_cut_to_size"],
)
async def test_deeply_nested_delta_is_dropped_without_touching_a_pin(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
    payload: bytes,
) -> None:
    async with start_gateway(thing) as running, admin_client(broker) as attacker:
        await attacker.publish(f"$aws/things/{thing}/shadow/update/delta", payload, qos=1)
        await until(lambda: running.gateway.shadow.counters["messages_dropped"] >= 1)
        assert running.pin(LED_PIN).state == 0
        await still_alive(shadow_client, running, thing, 0.25)


async def test_delta_with_a_5000_digit_integer_is_refused_without_touching_a_pin(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    payload = ('{"version": 1000000, "state": {"fan": ' + "7" * 5000 + "}}").encode()
    async with start_gateway(thing) as running, admin_client(broker) as attacker:
        await attacker.publish(f"$aws/things/{thing}/shadow/update/delta", payload, qos=1)
        doc = await shadow_client.wait_for(thing, lambda d: "fan" in errors_of(d), timeout=5)
        assert "expected a number" in errors_of(doc)["fan"]
        assert running.pin(FAN_PIN).state == 0
        await still_alive(shadow_client, running, thing, 0.75)


async def test_delta_with_version_2_to_the_62_does_not_make_later_deltas_stale(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    forged = {"version": 2**62, "timestamp": 0, "state": {"fan": 0.1}}
    async with start_gateway(thing) as running, admin_client(broker) as attacker:
        topic = f"$aws/things/{thing}/shadow/update/delta"
        await attacker.publish(topic, json.dumps(forged).encode(), qos=1)
        await until(lambda: running.pin(FAN_PIN).state == pytest.approx(0.1))
        for level in (0.3, 0.6, 0.9):  # real deltas, versions far below 2**62
            await still_alive(shadow_client, running, thing, level)
        assert running.gateway.shadow.reconciler.newest_version < 2**62


async def test_unknown_keys_give_a_bounded_summary_and_reporting_goes_on(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    async with start_gateway(thing) as running, admin_client(broker) as attacker:
        topic = f"$aws/things/{thing}/shadow/update/delta"
        for batch in range(25):  # 25,000 distinct unknown keys
            state = {f"junk_{batch}_{index}_{'x' * 20}": 1 for index in range(1000)}
            delta = {"version": 10**6 + batch, "state": state}
            await attacker.publish(topic, json.dumps(delta).encode(), qos=1)

        def summary_full(doc: dict[str, Any]) -> bool:
            gateway = doc["state"].get("reported", {}).get("gateway", {})
            return gateway.get("unknown_keys", {}).get("count") == "1000+"

        doc = await shadow_client.wait_for(thing, summary_full, timeout=10)
        summary = doc["state"]["reported"]["gateway"]["unknown_keys"]
        assert len(summary["names"]) <= 10
        assert not errors_of(doc)  # no per-key entries for names no device has
        reported_size = len(json.dumps(doc["state"]["reported"], separators=(",", ":")))
        assert reported_size < MAX_SECTION_BYTES
        await still_alive(shadow_client, running, thing, 0.4)  # reporting never stopped


async def test_flood_of_5000_desired_writes_keeps_the_queue_bounded_and_converges(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    async with start_gateway(thing) as running, admin_client(broker) as attacker:
        deepest = 0

        async def watch_queue() -> None:
            nonlocal deepest
            while True:
                deepest = max(deepest, running.gateway.shadow.status()["queued"])
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch_queue())
        topic = f"$aws/things/{thing}/shadow/update"
        for index in range(5000):
            body = {"state": {"desired": {"fan": (index % 100) / 100}}}
            await attacker.publish(topic, json.dumps(body).encode(), qos=0)
        final = {"state": {"desired": {"fan": 0.42}}}
        await attacker.publish(topic, json.dumps(final).encode(), qos=1)

        def settled(doc: dict[str, Any]) -> bool:
            state = doc["state"]
            return state.get("reported", {}).get("fan") == 0.42 and not state.get("delta")

        await shadow_client.wait_for(thing, settled, timeout=30)
        watcher.cancel()
        assert running.pin(FAN_PIN).state == pytest.approx(0.42)
        assert deepest <= MAX_QUEUED_REQUESTS


async def test_three_desired_writes_back_to_back_leave_pin_and_shadow_agreeing(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    async with start_gateway(thing) as running, admin_client(broker) as writer:
        topic = f"$aws/things/{thing}/shadow/update"
        for round_ in range(6):
            final = round_ % 2 == 0
            for value in (final, not final, final):  # no gap between the three
                body = {"state": {"desired": {"led": value}}}
                await writer.publish(topic, json.dumps(body).encode(), qos=1)

            def agreed(doc: dict[str, Any], final: bool = final) -> bool:
                state = doc["state"]
                return state.get("reported", {}).get("led") is final and not state.get("delta")

            await shadow_client.wait_for(thing, agreed, timeout=10)
            await until(lambda final=final: running.pin(LED_PIN).state == int(final))  # type: ignore[misc]
