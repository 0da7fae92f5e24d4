"""The device core on its own: pin writes and local behaviours, time driven by a manual clock
(no sleeping), no cloud anywhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import BinaryOutputConfig, DigitalInputConfig, PwmOutputConfig
from gateway.core.rules import Behaviours, Follow, FollowRules, Interlocks
from gateway.core.values import Blink, JsonValue, codec_for
from gateway.devices.engine import SUPERSEDED, DeviceEngine
from tests.clock import ManualClock
from tests.fakes import FakeBank

DEVICES = {
    "relay": BinaryOutputConfig(type="OutputDevice", pin=17),
    "fwd": BinaryOutputConfig(type="OutputDevice", pin=5),
    "rev": BinaryOutputConfig(type="OutputDevice", pin=6),
    "led": BinaryOutputConfig(type="LED", pin=22),
    "fan": PwmOutputConfig(type="PWMLED", pin=18),
    "button": DigitalInputConfig(type="Button", pin=4),
}


WALL_OFFSET = 1_700_000_000.0  # the engine's wall clock: the manual clock, shifted


def new_bank() -> FakeBank:
    pins: dict[str, JsonValue] = dict.fromkeys(DEVICES, False)
    pins["fan"] = 0.0
    return FakeBank(pins)


class Listener:
    def __init__(self) -> None:
        self.changes: list[tuple[str, JsonValue]] = []
        self.times: list[float] = []
        self.deferred: list[tuple[str, JsonValue]] = []
        self.dropped: list[tuple[str, str]] = []
        self.failsafed: list[str] = []

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        self.changes.append((name, value))
        self.times.append(observed_at)

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        self.deferred.append((name, value))

    def on_deferred_dropped(self, name: str, reason: str) -> None:
        self.dropped.append((name, reason))

    def on_failsafe(self, name: str) -> None:
        self.failsafed.append(name)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def world(clock: ManualClock) -> AsyncIterator[tuple[DeviceEngine, FakeBank, Listener]]:
    bank = new_bank()
    engine = DeviceEngine(
        bank=bank,
        codecs={name: codec_for(device) for name, device in DEVICES.items()},
        behaviours=Behaviours(
            interlocks=Interlocks.of([["fwd", "rev"]]),
            follows=FollowRules((Follow("led", "button", "mirror"),)),
            pulses_s={"relay": 0.5},
            failsafe={"fan": (10.0, 0.0)},
        ),
        min_intervals_s={"fan": 1.0},
        clock=lambda: clock.now + WALL_OFFSET,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    listener = Listener()
    engine.add_listener(listener)
    engine.prime(dict(bank.pins))
    task = asyncio.create_task(engine.run())
    await clock.advance(0)
    yield engine, bank, listener
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_pulse_ends_after_its_length_and_the_end_is_told(
    world: Any, clock: ManualClock
) -> None:
    engine, bank, listener = world
    assert engine.apply({"relay": True}).applied == {"relay": True}
    await clock.advance(0.49)
    assert bank.pins["relay"] is True
    await clock.advance(0.01)
    assert bank.pins["relay"] is False
    assert ("relay", False) in listener.changes


async def test_a_new_write_replaces_the_running_pulse(world: Any, clock: ManualClock) -> None:
    engine, bank, _ = world
    engine.apply({"relay": True})
    await clock.advance(0.4)
    engine.apply({"relay": True})  # restarts the pulse
    await clock.advance(0.4)
    assert bank.pins["relay"] is True
    await clock.advance(0.1)
    assert bank.pins["relay"] is False


async def test_fail_safe_value_is_driven_only_if_no_link_comes_up_in_time(
    world: Any, clock: ManualClock
) -> None:
    engine, bank, listener = world
    engine.apply({"fan": 0.8})
    engine.link_down()
    await clock.advance(9.9)
    engine.link_up()  # back in time: no fail-safe
    await clock.advance(1.0)
    assert bank.pins["fan"] == 0.8
    engine.link_down()
    await clock.advance(10.0)
    assert bank.pins["fan"] == 0.0
    assert listener.failsafed == ["fan"]


async def test_no_fail_safe_on_a_clean_stop(world: Any, clock: ManualClock) -> None:
    engine, bank, _ = world
    engine.apply({"fan": 0.8})
    engine.link_up()
    engine.link_down(failsafe=False)
    await clock.advance(60)
    assert bank.pins["fan"] == 0.8


async def test_min_interval_holds_back_and_then_applies_only_the_newest_value(
    world: Any, clock: ManualClock
) -> None:
    engine, bank, listener = world
    engine.apply({"fan": 0.1}, origin=listener)
    for level in (0.2, 0.3, 0.4):
        assert engine.apply({"fan": level}, origin=listener).deferred == {"fan"}
    await clock.advance(0.99)
    assert bank.pins["fan"] == 0.1
    await clock.advance(0.01)
    assert bank.pins["fan"] == 0.4
    assert [value for name, value in bank.writes if name == "fan"] == [0.1, 0.4]
    assert listener.deferred == [("fan", 0.4)]


async def test_interlock_refuses_and_switches_off_before_on(world: Any) -> None:
    engine, bank, _ = world
    engine.apply({"fwd": True})
    outcome = engine.apply({"rev": True})
    assert "rev" in outcome.refused and bank.pins["rev"] is False
    engine.apply({"rev": True, "fwd": False})
    assert bank.writes[-2:] == [("fwd", False), ("rev", True)]


async def test_an_input_is_told_to_links_and_its_followers_move(world: Any) -> None:
    engine, bank, listener = world
    engine.on_input("button", True, 1.0)
    assert bank.pins["led"] is True
    assert listener.changes == [("button", True), ("led", True)]


async def test_a_blink_with_a_count_reports_its_end(world: Any, clock: ManualClock) -> None:
    engine, bank, listener = world
    engine.apply({"led": Blink(0.5, 0.5, 2)}, origin=listener)
    await clock.advance(1.9)
    assert not any(name == "led" for name, _ in listener.changes)
    bank.pins["led"] = False  # gpiozero turns it off at the end of the pattern
    await clock.advance(0.1)
    assert listener.changes[-1] == ("led", False)


async def test_a_failing_timer_action_does_not_end_the_engine(
    world: Any, clock: ManualClock
) -> None:
    engine, bank, _ = world
    engine.apply({"relay": True})
    bank.fail.add("relay")
    await clock.advance(0.5)  # the pulse end fails to write
    bank.fail.clear()
    engine.apply({"relay": True})
    await clock.advance(0.5)
    assert bank.pins["relay"] is False  # timers still run


async def test_two_links_both_hear_every_change_and_fail_safe_waits_for_both(
    world: Any, clock: ManualClock
) -> None:
    """More than one cloud link at once: each listens to the same device core, and the
    fail-safe value comes only when no link is up."""
    engine, bank, first = world
    second = Listener()
    engine.add_listener(second)
    engine.on_input("button", True, 1.0)
    assert ("button", True) in first.changes and ("button", True) in second.changes
    engine.apply({"fan": 0.8})
    engine.link_up()  # link one
    engine.link_up()  # link two
    engine.link_down()  # link one drops: link two still up, no fail-safe
    await clock.advance(60)
    assert bank.pins["fan"] == 0.8
    engine.link_down()  # both down now
    await clock.advance(10)
    assert bank.pins["fan"] == 0.0
    assert first.failsafed == ["fan"] and second.failsafed == ["fan"]


async def test_a_value_one_link_applies_is_told_to_the_others_with_its_time(
    world: Any, clock: ManualClock
) -> None:
    engine, _, origin = world
    other = Listener()
    engine.add_listener(other)
    outcome = engine.apply({"relay": True}, origin=origin)
    assert outcome.applied == {"relay": True}
    assert other.changes == [("relay", True)] and other.times == [clock.now + WALL_OFFSET]
    assert origin.changes == []  # the caller handles its own outcome


async def test_an_apply_without_origin_is_told_to_every_listener(world: Any) -> None:
    engine, _, listener = world
    engine.apply({"fwd": True})
    assert listener.changes == [("fwd", True)]


async def test_a_refused_value_is_told_to_nobody(world: Any) -> None:
    engine, _, origin = world
    other = Listener()
    engine.add_listener(other)
    engine.apply({"fwd": True}, origin=origin)
    engine.apply({"rev": True}, origin=origin)  # interlocked with fwd
    assert other.changes == [("fwd", True)]


async def test_followers_of_an_applied_output_are_told_after_it(world: Any) -> None:
    engine, _, origin = world
    engine.behaviours = Behaviours(follows=FollowRules((Follow("led", "relay", "mirror"),)))
    other = Listener()
    engine.add_listener(other)
    engine.apply({"relay": True}, origin=origin)
    assert other.changes == [("relay", True), ("led", True)]
    assert origin.changes == [("led", True)]  # the engine's own change: everyone hears it


async def test_a_held_back_value_lands_as_deferred_for_its_origin_and_a_change_for_others(
    world: Any, clock: ManualClock
) -> None:
    engine, _, origin = world
    other = Listener()
    engine.add_listener(other)
    engine.apply({"fan": 0.1}, origin=origin)
    engine.apply({"fan": 0.5}, origin=origin)
    await clock.advance(1.0)
    assert origin.deferred == [("fan", 0.5)] and origin.changes == []
    assert other.deferred == [] and other.changes == [("fan", 0.1), ("fan", 0.5)]
    assert other.times[-1] == clock.now + WALL_OFFSET


async def test_a_held_back_value_replaced_by_another_link_tells_its_origin(
    world: Any, clock: ManualClock
) -> None:
    engine, bank, first = world
    second = Listener()
    engine.add_listener(second)
    engine.apply({"fan": 0.1}, origin=first)
    engine.apply({"fan": 0.5}, origin=first)
    engine.apply({"fan": 0.7}, origin=second)
    assert first.dropped == [("fan", SUPERSEDED)] and second.dropped == []
    await clock.advance(1.0)
    assert bank.pins["fan"] == 0.7
    assert second.deferred == [("fan", 0.7)]
    assert first.deferred == [] and first.changes[-1] == ("fan", 0.7)


async def test_restored_outputs_are_told_to_the_other_links(world: Any) -> None:
    engine, bank, origin = world
    other = Listener()
    engine.add_listener(other)
    engine.restore({"relay": True}, origin=origin)
    assert bank.pins["relay"] is True
    assert other.changes == [("relay", True)] and origin.changes == []


async def test_a_held_back_value_refused_when_it_lands_is_told_to_its_origin(
    world: Any, clock: ManualClock
) -> None:
    engine, bank, origin = world
    other = Listener()
    engine.add_listener(other)
    engine.min_intervals["rev"] = 1.0
    engine.apply({"rev": False}, origin=origin)
    assert engine.apply({"rev": True}, origin=origin).deferred == {"rev"}
    engine.apply({"fwd": True}, origin=other)  # meanwhile: interlocked with rev
    await clock.advance(1.0)
    assert bank.pins["rev"] is False
    assert [name for name, _ in origin.dropped] == ["rev"]
    assert "interlock" in origin.dropped[0][1] and origin.deferred == []
    assert ("rev", True) not in other.changes
