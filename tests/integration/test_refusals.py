"""Refused desired values against real mosquitto, the dev cloud's shadow service and an
in-process gateway on mock GPIO: each refusal is counted, logged and reported once (the
service publishes a delta again after the gateway's report, as AWS does while desired and
reported differ), and it ends when the desired key is set to null or leaves desired."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.devcloud import ShadowClient, ShadowService

pytestmark = pytest.mark.integration

ECHO_WAIT_S = 0.6  # the delta our own report causes arrives within milliseconds


def status_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["state"].get("reported", {}).get("gateway", {}) or {}


def errors_of(doc: dict[str, Any]) -> dict[str, Any]:
    return status_of(doc).get("errors", {}) or {}


def unknown_names(doc: dict[str, Any]) -> list[str]:
    return (status_of(doc).get("unknown_keys") or {}).get("names", [])


async def test_a_rejected_value_is_counted_and_logged_once(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        deltas_seen = running.gateway.shadow.reconciler.newest_version
        with capture_logs() as logs:
            await shadow_client.update(thing, {"desired": {"led": "maybe"}})
            await shadow_client.wait_for(thing, lambda d: "led" in errors_of(d), timeout=5)
            await asyncio.sleep(ECHO_WAIT_S)
        # The echo happened: the service's delta after the gateway's report was seen too.
        assert running.gateway.shadow.reconciler.newest_version >= deltas_seen + 2
        assert running.gateway.shadow.counters["deltas_rejected"] == 1
        assert [e["event"] for e in logs].count("desired_rejected") == 1


async def test_an_unknown_key_is_counted_once_and_cleared_when_set_to_null(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        await shadow_client.update(thing, {"desired": {"nosuchdevice": 1, "led": "maybe"}})
        await shadow_client.wait_for(thing, lambda d: "nosuchdevice" in unknown_names(d), timeout=5)
        await asyncio.sleep(ECHO_WAIT_S)
        assert running.gateway.shadow.counters["deltas_rejected"] == 2  # led and nosuchdevice
        await shadow_client.update(thing, {"desired": {"nosuchdevice": None}})
        doc = await shadow_client.wait_for(
            thing, lambda d: "nosuchdevice" not in unknown_names(d), timeout=5
        )
        assert "led" in errors_of(doc)  # still desired, still refused


async def test_an_error_entry_clears_when_its_desired_key_is_set_to_null(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing):
        await shadow_client.update(thing, {"desired": {"fan": 7}})
        await shadow_client.wait_for(thing, lambda d: "fan" in errors_of(d), timeout=5)
        await shadow_client.update(thing, {"desired": {"fan": None}})
        await shadow_client.wait_for(thing, lambda d: "fan" not in errors_of(d), timeout=5)


async def test_deleting_the_whole_desired_section_clears_every_refusal(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing):
        await shadow_client.update(thing, {"desired": {"fan": 7, "junk": 1}})
        await shadow_client.wait_for(
            thing, lambda d: "fan" in errors_of(d) and "junk" in unknown_names(d), timeout=5
        )
        await shadow_client.update(thing, {"desired": None})
        await shadow_client.wait_for(
            thing, lambda d: not errors_of(d) and not unknown_names(d), timeout=5
        )


async def test_a_refusal_whose_key_left_desired_while_offline_clears_at_the_next_start(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing):
        await shadow_client.update(thing, {"desired": {"fan": 7}})
        await shadow_client.wait_for(thing, lambda d: "fan" in errors_of(d), timeout=5)
    await shadow_client.update(thing, {"desired": {"fan": None}})
    async with start_gateway(thing):
        await shadow_client.wait_for(thing, lambda d: "fan" not in errors_of(d), timeout=5)


async def test_the_same_bad_value_after_a_good_one_counts_again(
    shadow_service: ShadowService, shadow_client: ShadowClient, start_gateway: Any, thing: str
) -> None:
    async with start_gateway(thing) as running:
        for value in ("maybe", True, "maybe"):
            await shadow_client.update(thing, {"desired": {"led": value}})
            await asyncio.sleep(ECHO_WAIT_S)
        assert running.gateway.shadow.counters["deltas_rejected"] == 2
