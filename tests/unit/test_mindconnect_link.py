"""The MindConnect link's logic against a fake device core and a fake MQTT session (the real
outbox on disk): points out in order with their observation times, coalesced, commands in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from gateway.config.schema import BinaryOutputConfig, DigitalInputConfig, PwmOutputConfig
from gateway.core.outbox import Outbox
from gateway.core.ports import EngineListener, InboundMessage, Outcome
from gateway.core.values import JsonValue, NativeValue, codec_for
from gateway.errors import MqttConnectionError
from gateway.links.mindconnect.link import MindConnectLink, MindConnectSettings

TENANT, CLIENT = "acme", "acme_pi1"
TS = f"tc/{TENANT}/{CLIENT}/o/mc_v3/ts"
EVENTS = f"tc/{TENANT}/{CLIENT}/o/mc_v3/e"
COMMANDS = f"tc/{TENANT}/{CLIENT}/i/cmd_v3/c"
ANSWERS = f"tc/{TENANT}/{CLIENT}/o/cmd_v3/u"
DEVICES = {
    "led": BinaryOutputConfig(type="LED", pin=17),
    "fan": PwmOutputConfig(type="PWMLED", pin=18),
    "button": DigitalInputConfig(type="Button", pin=4),
}


class FakeCore:
    """The device core as the link sees it; ``apply`` answers what ``outcome`` says."""

    def __init__(self) -> None:
        self.values: dict[str, JsonValue] = {"led": False, "fan": 0.0, "button": False}
        self.listeners: list[EngineListener] = []
        self.applied: list[Mapping[str, NativeValue]] = []
        self.outcome: Callable[[Mapping[str, NativeValue]], Outcome] = lambda c: Outcome(
            applied=dict(c)  # type: ignore[arg-type]
        )
        self.links_up = 0
        self.origins: list[EngineListener | None] = []

    def add_listener(self, listener: EngineListener) -> None:
        self.listeners.append(listener)

    def input(self, name: str, value: JsonValue, at: float) -> None:
        self.values[name] = value
        for listener in self.listeners:
            listener.on_change(name, value, at)

    def apply(
        self, changes: Mapping[str, NativeValue], *, origin: EngineListener | None = None
    ) -> Outcome:
        self.applied.append(changes)
        self.origins.append(origin)
        outcome = self.outcome(changes)
        self.values.update(outcome.applied)
        return outcome

    def link_up(self) -> None:
        self.links_up += 1

    def link_down(self, *, failsafe: bool = True) -> None:
        self.links_up -= 1

    def prime(self, values: Mapping[str, JsonValue]) -> None: ...
    def on_input(self, name: str, value: JsonValue, observed_at: float) -> None: ...
    def restore(
        self, values: Mapping[str, NativeValue], *, origin: EngineListener | None = None
    ) -> None: ...


class FakeSession:
    def __init__(self, *, fail_after: int | None = None) -> None:
        self.published: list[tuple[str, Any]] = []
        self.subscribed: list[str] = []
        self.inbound: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.fail_after = fail_after

    async def subscribe(self, topics: Sequence[str]) -> None:
        self.subscribed += topics

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        if self.fail_after is not None and len(self.published) >= self.fail_after:
            raise MqttConnectionError("connection lost")
        self.published.append((topic, json.loads(payload)))

    async def messages(self) -> AsyncIterator[InboundMessage]:
        while True:
            yield await self.inbound.get()

    def command(self, payload: object) -> None:
        self.inbound.put_nowait(InboundMessage(COMMANDS, json.dumps(payload).encode()))

    def set(self, device: str, value: object, request_id: str = "q") -> None:
        """A set command (job "j")."""
        payload = {"commandType": "set", "device": device, "value": value}
        self.command({"id": request_id, "data": {"jobId": "j", "payload": payload}})

    def on(self, topic: str) -> list[Any]:
        return [payload for t, payload in self.published if t == topic]

    def points(self) -> list[tuple[str, str, str]]:
        return [
            (value["dataPointId"], value["value"], entry["timestamp"])
            for message in self.on(TS)
            for entry in message["timeseries"]
            for value in entry["values"]
        ]


def make_link(
    tmp_path: Path, core: FakeCore, *, interval_s: float = 0.0, events: frozenset[str] = frozenset()
) -> MindConnectLink:
    settings = MindConnectSettings(
        tenant=TENANT,
        codecs={name: codec_for(device) for name, device in DEVICES.items()},
        datapoints={"led": "Lamp"},
        event_devices=events,
        publish_interval_s=interval_s,
    )
    link = MindConnectLink(
        settings, core=core, outbox=Outbox(tmp_path / "mc.sqlite3"), clock=lambda: 1_000.0
    )
    link.set_client_id(CLIENT)
    return link


@asynccontextmanager
async def running(link: MindConnectLink, session: FakeSession) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    outbox = asyncio.ensure_future(link.run_outbox())
    sess = asyncio.ensure_future(link.run_session(session, stop))
    try:
        yield stop
    finally:
        stop.set()
        with suppress(BaseException):
            await asyncio.wait_for(sess, 5)
        outbox.cancel()
        with suppress(asyncio.CancelledError):
            await outbox


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_an_input_change_goes_out_as_a_point_with_its_observation_time(
    tmp_path: Path,
) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        assert session.subscribed == [COMMANDS]
        core.input("button", True, 1_764_612_285.25)
        await until(lambda: bool(session.points()))
        await until(lambda: link.status()["queue_depth"] == 0)
    assert session.points() == [("button", "true", "2025-12-01T18:04:45.250Z")]
    assert link.status()["points_sent"] == 1
    assert link.status()["last_publish_at"] == 1_000.0


async def test_changes_within_the_interval_go_out_in_one_message_in_order(
    tmp_path: Path,
) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core, interval_s=0.3)
    async with running(link, session):
        await until(lambda: link.connected)
        core.input("button", True, 1.0)
        await until(lambda: len(session.on(TS)) == 1)
        for i in range(5):
            core.input("button", i % 2 == 1, 2.0 + i)
        await until(lambda: len(session.points()) == 6)
    assert len(session.on(TS)) == 2  # the first at once, the burst coalesced
    assert [value for _, value, _ in session.points()] == [
        "true",
        "false",
        "true",
        "false",
        "true",
        "false",
    ]


async def test_points_persisted_while_disconnected_go_out_at_the_next_session(
    tmp_path: Path,
) -> None:
    core = FakeCore()
    link = make_link(tmp_path, core)
    outbox = asyncio.ensure_future(link.run_outbox())
    for i in range(3):
        core.input("button", i % 2 == 0, 10.0 + i)
    await until(lambda: link.status()["queue_depth"] == 3)
    broken = FakeSession(fail_after=0)
    with pytest.raises(BaseExceptionGroup):
        await link.run_session(broken, asyncio.Event())
    assert link.status()["queue_depth"] == 3 and not link.connected
    session = FakeSession()
    stop = asyncio.Event()
    task = asyncio.ensure_future(link.run_session(session, stop))
    await until(lambda: len(session.points()) == 3)
    stop.set()
    await task
    outbox.cancel()
    with suppress(asyncio.CancelledError):
        await outbox
    assert [stamp for _, _, stamp in session.points()] == [
        "1970-01-01T00:00:10.000Z",
        "1970-01-01T00:00:11.000Z",
        "1970-01-01T00:00:12.000Z",
    ]


async def test_what_was_not_acknowledged_survives_a_restart(tmp_path: Path) -> None:
    core = FakeCore()
    link = make_link(tmp_path, core)
    outbox = asyncio.ensure_future(link.run_outbox())
    core.input("button", True, 5.0)
    await until(lambda: link.status()["queue_depth"] == 1)
    outbox.cancel()
    with suppress(asyncio.CancelledError):
        await outbox
    again_core, session = FakeCore(), FakeSession()
    again = make_link(tmp_path, again_core)
    async with running(again, session):
        await until(lambda: bool(session.points()))
    assert session.points()[0] == ("button", "true", "1970-01-01T00:00:05.000Z")


async def test_a_set_command_moves_the_output_and_is_answered_executed(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.command(
            {
                "id": "q1",
                "data": {
                    "jobId": "j1",
                    "payload": {"commandType": "set", "device": "led", "value": True},
                },
            }
        )
        await until(lambda: bool(session.on(ANSWERS)) and bool(session.points()))
    (answer,) = session.on(ANSWERS)
    assert answer["requestId"] == "q1"
    assert answer["data"]["jobId"] == "j1"
    assert answer["data"]["status"] == "EXECUTED"
    assert core.applied == [{"led": True}]
    assert ("Lamp", "true", "1970-01-01T00:16:40.000Z") in session.points()
    assert link.status()["commands_executed"] == 1


async def test_a_bad_value_is_answered_failed_and_touches_nothing(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        for value_id, (device, value) in enumerate(
            [("fan", 7), ("button", True), ("nosuch", 1), ("led", "on")]
        ):
            session.set(device, value, f"q{value_id}")
        await until(lambda: len(session.on(ANSWERS)) == 4)
    assert {a["data"]["status"] for a in session.on(ANSWERS)} == {"FAILED"}
    assert core.applied == []
    messages = [a["data"]["response"]["message"] for a in session.on(ANSWERS)]
    assert "read-only" in messages[1] and "unknown device" in messages[2]
    assert link.status()["commands_failed"] == 4


async def test_an_interlock_refusal_is_answered_failed_with_the_reason(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    core.outcome = lambda c: Outcome(refused={"led": "interlocked with relay"})
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.set("led", True)
        await until(lambda: bool(session.on(ANSWERS)))
    (answer,) = session.on(ANSWERS)
    assert answer["data"]["status"] == "FAILED"
    assert "interlocked with relay" in answer["data"]["response"]["message"]


async def test_a_held_back_command_is_executing_then_executed(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    core.outcome = lambda c: Outcome(deferred=frozenset(c))
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.set("led", True)
        await until(lambda: bool(session.on(ANSWERS)))
        link.on_deferred_applied("led", True)
        await until(lambda: len(session.on(ANSWERS)) == 2)
    assert [a["data"]["status"] for a in session.on(ANSWERS)] == ["EXECUTING", "EXECUTED"]


async def test_unanswerable_commands_are_dropped_and_counted(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.inbound.put_nowait(InboundMessage(COMMANDS, b"[" * 10_000))
        session.inbound.put_nowait(InboundMessage(COMMANDS, b'{"data": {}}'))
        session.set("led", True)
        await until(lambda: bool(session.on(ANSWERS)))
        assert link.connected
    assert link.status()["commands_dropped"] == 2


async def test_devices_with_events_also_publish_mindconnect_events(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core, events=frozenset({"button"}))
    async with running(link, session):
        await until(lambda: link.connected)
        core.input("button", True, 1.0)
        core.input("fan", 0.5, 1.0)
        await until(lambda: bool(session.on(EVENTS)) and len(session.points()) == 2)
    (message,) = session.on(EVENTS)
    assert [e["description"] for e in message["events"]] == ["button changed to true"]


async def test_every_value_goes_out_once_when_the_outbox_opens(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core)
    stop = asyncio.Event()
    outbox = asyncio.ensure_future(link.run_outbox(first_values=True))
    sess = asyncio.ensure_future(link.run_session(session, stop))
    try:
        await until(lambda: len(session.points()) == 3)
        core.input("fan", 0.25, 5.0)  # later changes come from the device core
        await until(lambda: len(session.points()) == 4)
    finally:
        stop.set()
        await asyncio.wait_for(sess, 5)
        outbox.cancel()
        with suppress(asyncio.CancelledError):
            await outbox
    assert len({p[0] for p in session.points()[:3]}) == 3  # one point per device
    assert session.points()[-1][1] == "0.25"


async def test_a_command_names_the_link_as_the_origin_of_its_apply(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.set("led", True)
        await until(lambda: bool(session.on(ANSWERS)))
    assert core.origins == [link]


async def test_a_held_back_command_superseded_by_another_link_is_failed(tmp_path: Path) -> None:
    core, session = FakeCore(), FakeSession()
    core.outcome = lambda c: Outcome(deferred=frozenset(c))
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.set("led", True)
        await until(lambda: bool(session.on(ANSWERS)))
        link.on_deferred_dropped("led", "superseded by a value set through another link")
        await until(lambda: len(session.on(ANSWERS)) == 2)
    answers = session.on(ANSWERS)
    assert [a["data"]["status"] for a in answers] == ["EXECUTING", "FAILED"]
    assert "another link" in answers[1]["data"]["response"]["message"]


def test_status_shows_the_link_like_the_shadow(tmp_path: Path) -> None:
    link = make_link(tmp_path, FakeCore())
    assert set(link.status()) >= {
        "connected",
        "client_id",
        "last_publish_at",
        "queue_depth",
        "commands_executed",
        "commands_failed",
        "commands_dropped",
        "points_sent",
    }


async def test_a_failure_inside_the_device_core_is_answered_failed_not_raised(
    tmp_path: Path,
) -> None:
    core, session = FakeCore(), FakeSession()

    def broken(changes: Mapping[str, NativeValue]) -> Outcome:
        raise RuntimeError("the pin broke")

    core.outcome = broken
    link = make_link(tmp_path, core)
    async with running(link, session):
        await until(lambda: link.connected)
        session.set("led", True)
        await until(lambda: bool(session.on(ANSWERS)))
        assert link.connected
    assert session.on(ANSWERS)[0]["data"]["status"] == "FAILED"
