"""Device behaviours end to end: mock GPIO, real mosquitto, the dev cloud's shadow service.

Pin timing is read from gpiozero's own mock pin history (each entry: seconds since the
previous change), so the assertions are about what the pins really did.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService
from gateway.devcloud.faultproxy import FaultProxy
from tests.integration.harness import gateway_via, reported, until

pytestmark = pytest.mark.integration


def edges(pin: Any) -> list[tuple[float, float]]:
    """(absolute time, state) of each change in a mock pin's history.

    MockPin keeps each change's time since the previous one, counted from the pin's own
    creation; anchoring on its last change (an absolute monotonic time) puts every pin on one
    clock, so edges microseconds apart on two pins compare in the right order."""
    now = pin._last_change - sum(entry.timestamp for entry in pin.states)
    timeline = []
    for entry in pin.states:
        now += entry.timestamp
        timeline.append((now, float(entry.state)))
    return timeline


async def test_pulse_switches_on_for_its_length_and_reports_both_edges(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    devices = "  bell: {type: OutputDevice, pin: 27, pulse_ms: 200}\n"
    async with start_gateway(thing, devices=devices) as running:
        seen_on = asyncio.ensure_future(
            shadow_client.wait_for(thing, reported("bell", True), timeout=5)
        )
        await asyncio.sleep(0.05)
        await shadow_client.update(thing, {"desired": {"bell": True}})
        await seen_on
        await shadow_client.wait_for(thing, reported("bell", False), timeout=5)
        states = [entry for entry in running.pin(27).states]
        rise = next(i for i, entry in enumerate(states) if entry.state == 1)
        fall = next(i for i in range(rise + 1, len(states)) if states[i].state == 0)
        duration = sum(entry.timestamp for entry in states[rise + 1 : fall + 1])
        assert duration == pytest.approx(0.200, abs=0.020)


async def test_led_blinks_n_times_in_the_background_then_reports_off(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    async with start_gateway(thing) as running:
        pattern = {"blink": {"on_s": 0.05, "off_s": 0.05, "n": 3}}
        blinking = asyncio.ensure_future(
            shadow_client.wait_for(thing, reported("led", pattern), timeout=5)
        )
        await asyncio.sleep(0.05)
        await shadow_client.update(thing, {"desired": {"led": pattern}})
        await blinking
        await shadow_client.wait_for(thing, reported("led", False), timeout=5)
        rises = [state for _, state in edges(running.pin(17)) if state == 1]
        assert len(rises) == 3


async def test_interlock_is_never_violated_by_a_flood_of_random_desired_states(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    devices = "  fwd: {type: OutputDevice, pin: 5}\n  rev: {type: OutputDevice, pin: 6}\n"
    rng = random.Random(20261123)
    async with start_gateway(thing, devices=devices, extra="interlock: [fwd, rev]\n") as running:
        for index in range(80):
            names = rng.sample(["fwd", "rev"], rng.randint(1, 2))
            desired = {name: rng.random() < 0.5 for name in names}
            if index % 10 == 0:
                desired = {"fwd": True, "rev": True}  # a request the interlock must refuse
            await shadow_client.update(thing, {"desired": desired})
        await shadow_client.update(thing, {"desired": {"fwd": False, "rev": True}})  # a settled end
        await shadow_client.wait_for(
            thing, lambda doc: doc["state"].get("reported", {}).get("rev") is True, timeout=10
        )
        timeline = sorted(
            [(t, "fwd", s) for t, s in edges(running.pin(5))]
            + [(t, "rev", s) for t, s in edges(running.pin(6))]
        )
        level = {"fwd": 0.0, "rev": 0.0}
        for _, name, state in timeline:
            level[name] = state
            assert not (level["fwd"] and level["rev"]), "both outputs were on at once"
        assert running.gateway.shadow.counters["deltas_rejected"] > 0  # some were refused


async def test_interlock_refusal_is_reported_and_leaves_the_pin_alone(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    start_gateway: Any,
    thing: str,
) -> None:
    devices = "  fwd: {type: OutputDevice, pin: 5}\n  rev: {type: OutputDevice, pin: 6}\n"
    async with start_gateway(thing, devices=devices, extra="interlock: [fwd, rev]\n") as running:
        await shadow_client.update(thing, {"desired": {"fwd": True}})
        await shadow_client.wait_for(thing, reported("fwd", True), timeout=5)
        await shadow_client.update(thing, {"desired": {"rev": True}})

        def refused(doc: dict[str, Any]) -> bool:
            errors = doc["state"].get("reported", {}).get("gateway", {}).get("errors", {})
            return "interlock" in errors.get("rev", "")

        await shadow_client.wait_for(thing, refused, timeout=5)
        assert running.pin(6).state == 0


async def test_fail_safe_drives_the_safe_value_and_does_not_reapply_stale_desired(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    devices = "  pump: {type: OutputDevice, pin: 5, on_disconnect: {after_s: 0.5, value: false}}\n"
    extra = "shadow: {clear_desired: false}\n"  # the stale desired value stays in the shadow
    async with gateway_via(proxy, broker, tmp_path, thing, devices=devices, extra=extra) as running:
        await shadow_client.update(thing, {"desired": {"pump": True}})
        await shadow_client.wait_for(thing, reported("pump", True), timeout=5)
        proxy.cut()
        await until(lambda: running.pin(5).state == 0, timeout=5)  # pump stopped, unsupervised
        proxy.restore()
        await shadow_client.wait_for(
            thing, reported("pump", False), timeout=10
        )  # reported once back
        await asyncio.sleep(0.5)
        assert running.pin(5).state == 0  # the old desired true was not applied again
        await shadow_client.update(thing, {"desired": {"pump": True}})  # a fresh delta
        await shadow_client.wait_for(thing, reported("pump", True), timeout=5)
        assert running.pin(5).state == 1


async def test_follow_works_with_the_broker_unreachable(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    devices = (
        "  switch: {type: Button, pin: 4}\n"
        "  lamp: {type: LED, pin: 17, follow: switch}\n"
        "  night: {type: LED, pin: 18, follow: {device: switch, mode: invert}}\n"
    )
    async with gateway_via(proxy, broker, tmp_path, thing, devices=devices) as running:
        proxy.cut()
        await until(lambda: not running.gateway.shadow.connected)
        running.pin(4).drive_low()  # the wall switch is pressed with the network down
        await until(lambda: running.pin(17).state == 1, timeout=1)
        assert running.pin(18).state == 0
        proxy.restore()

        def both(doc: dict[str, Any]) -> bool:
            state = doc["state"].get("reported", {})
            return (
                state.get("switch") is True
                and state.get("lamp") is True
                and state.get("night") is False
            )

        await shadow_client.wait_for(thing, both, timeout=10)
