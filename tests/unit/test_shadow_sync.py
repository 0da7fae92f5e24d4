"""ShadowSync's request handling with a fake session: replies, limits and rejections.

The broker paths are covered by the integration tests; here a fake session lets each reply
(409, 429, 400, timeouts) be played exactly, which a real shadow service rarely produces.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from gateway.config import BinaryOutputConfig, DigitalInputConfig, ShadowConfig
from gateway.core.ports import InboundMessage
from gateway.core.values import codec_for
from gateway.devices.engine import DeviceEngine
from gateway.links.shadow.protocol import MAX_IN_FLIGHT
from gateway.links.shadow.settings import ShadowLinkSettings
from gateway.links.shadow.sync import ShadowSync
from gateway.links.shadow.topics import Reply, ShadowTopics
from tests.clock import ManualClock
from tests.fakes import FakeBank

THING = "pi"
TOPICS = ShadowTopics(THING)


def new_bank() -> FakeBank:
    return FakeBank({"led": False, "button": False})


class FakeSession:
    """Records publishes; the test feeds inbound messages."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.inbound: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.subscribed: list[str] = []
        self.statuses: list[tuple[str, bool]] = []
        self.new_publish = asyncio.Event()

    async def subscribe(self, topics: Sequence[str]) -> None:
        self.subscribed.extend(topics)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        if topic == f"things/{THING}/status":
            self.statuses.append((payload.decode(), retain))
            return
        self.published.append((topic, json.loads(payload)))
        self.new_publish.set()

    async def messages(self) -> AsyncIterator[InboundMessage]:
        while True:
            yield await self.inbound.get()

    def reply(self, kind: Reply, payload: dict[str, Any]) -> None:
        self.inbound.put_nowait(InboundMessage(TOPICS.reply(kind), json.dumps(payload).encode()))

    async def wait_publishes(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        async with asyncio.timeout(2):
            while len(self.published) < count:
                self.new_publish.clear()
                await self.new_publish.wait()
        return self.published


def make_sync(bank: FakeBank, **shadow: Any) -> ShadowSync:
    devices = {
        "led": BinaryOutputConfig(type="LED", pin=17),
        "button": DigitalInputConfig(type="Button", pin=4),
    }
    codecs = {name: codec_for(device) for name, device in devices.items()}
    sync = ShadowSync(
        ShadowLinkSettings(thing=THING, shadow=ShadowConfig(**shadow), codecs=codecs),
        engine=DeviceEngine(bank=bank, codecs=codecs, clock=lambda: 1700000000.0),
        clock=lambda: 1700000000.0,
    )
    sync.engine.prime(dict(bank.pins))
    return sync


@pytest.fixture
async def running() -> AsyncIterator[tuple[ShadowSync, FakeSession, FakeBank]]:
    bank = new_bank()
    sync = make_sync(bank)
    session = FakeSession()
    stop = asyncio.Event()
    task = asyncio.create_task(sync.run_session(session, stop))
    await session.wait_publishes(1)  # the initial get
    yield sync, session, bank
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def answer_initial_get(session: FakeSession, version: int = 5, delta: Any = None) -> None:
    _, get = session.published[0]
    state: dict[str, Any] = {"reported": {"led": False}}
    if delta:
        state["delta"] = delta
    session.reply(
        Reply.GET_ACCEPTED, {"version": version, "state": state, "clientToken": get["clientToken"]}
    )


async def test_subscribes_to_the_five_reply_topics_then_gets() -> None:
    bank, session, stop = new_bank(), FakeSession(), asyncio.Event()
    task = asyncio.create_task(make_sync(bank).run_session(session, stop))
    published = await session.wait_publishes(1)
    assert sorted(session.subscribed) == sorted(TOPICS.subscriptions)
    assert published[0][0] == TOPICS.get
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_version_conflict_fetches_the_document_again(running: Any) -> None:
    _sync, session, _bank = running
    await answer_initial_get(session)
    await session.wait_publishes(2)  # the full report after the get
    session.reply(Reply.UPDATE_DELTA, {"version": 6, "state": {"led": True}})
    published = await session.wait_publishes(3)
    topic, update = published[2]
    assert topic == TOPICS.update and update["version"] == 6
    session.reply(
        Reply.UPDATE_REJECTED,
        {"code": 409, "message": "Version conflict", "clientToken": update["clientToken"]},
    )
    published = await session.wait_publishes(4)
    assert published[3][0] == TOPICS.get


async def test_throttled_update_is_retried(running: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.links.shadow import protocol as shadow_protocol

    monkeypatch.setattr(shadow_protocol, "THROTTLE_RETRY_S", 0.01)
    _sync, session, _bank = running
    await answer_initial_get(session)
    _, report = (await session.wait_publishes(2))[1]
    session.reply(
        Reply.UPDATE_REJECTED,
        {"code": 429, "message": "Too Many Requests", "clientToken": report["clientToken"]},
    )
    published = await session.wait_publishes(3)
    retry = published[2][1]
    assert retry["state"] == report["state"] and retry["clientToken"] != report["clientToken"]


async def test_bad_request_is_dropped_not_retried(running: Any) -> None:
    _sync, session, _bank = running
    await answer_initial_get(session)
    _, report = (await session.wait_publishes(2))[1]
    session.reply(
        Reply.UPDATE_REJECTED, {"code": 400, "message": "Bad", "clientToken": report["clientToken"]}
    )
    await asyncio.sleep(0.05)
    assert len(session.published) == 2


async def test_rejection_for_another_clients_token_is_ignored(running: Any) -> None:
    _sync, session, _bank = running
    await answer_initial_get(session)
    await session.wait_publishes(2)
    session.reply(
        Reply.UPDATE_REJECTED, {"code": 409, "message": "x", "clientToken": "someone-else"}
    )
    await asyncio.sleep(0.05)
    assert len(session.published) == 2


async def test_pending_delta_in_the_fetched_document_is_applied(running: Any) -> None:
    _sync, session, bank = running
    await answer_initial_get(session, delta={"led": True})
    _, update = (await session.wait_publishes(2))[1]
    assert bank.writes == [("led", True)]
    assert update["state"]["desired"] == {"led": None}
    assert update["state"]["reported"]["led"] is True
    assert update["state"]["reported"]["gateway"]["version"]


async def test_no_more_than_ten_requests_are_in_flight(running: Any) -> None:
    sync, session, _bank = running
    await answer_initial_get(session)
    await session.wait_publishes(2)
    for index in range(15):
        sync.engine.on_input("button", index % 2 == 0, 1.0)
        await asyncio.sleep(0.06)  # past the coalescing window, so each is its own update
    await asyncio.sleep(0.1)
    # Nothing was answered: the initial report plus at most 9 more are outstanding.
    assert len(session.published) - 1 == MAX_IN_FLIGHT  # minus the answered get


async def test_missing_shadow_is_created_by_reporting_everything(running: Any) -> None:
    sync, session, _bank = running
    _, get = session.published[0]
    session.reply(
        Reply.GET_REJECTED,
        {"code": 404, "message": "No shadow exists", "clientToken": get["clientToken"]},
    )
    _, update = (await session.wait_publishes(2))[1]
    assert update["state"]["reported"]["led"] is False and "button" in update["state"]["reported"]
    assert sync.synced.is_set()


async def test_timestamp_is_sent_when_configured() -> None:
    bank, session, stop = new_bank(), FakeSession(), asyncio.Event()
    sync = make_sync(bank, send_timestamp=True)
    task = asyncio.create_task(sync.run_session(session, stop))
    await session.wait_publishes(1)
    await answer_initial_get(session)
    _, report = (await session.wait_publishes(2))[1]
    assert report["timestamp"] == 1700000000000
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_no_timestamp_by_default(running: Any) -> None:
    _sync, session, _bank = running
    await answer_initial_get(session)
    _, report = (await session.wait_publishes(2))[1]
    assert "timestamp" not in report


async def test_unacknowledged_input_report_is_kept_for_the_next_session() -> None:
    bank, session, stop = new_bank(), FakeSession(), asyncio.Event()
    sync = make_sync(bank)
    task = asyncio.create_task(sync.run_session(session, stop))
    await session.wait_publishes(1)
    await answer_initial_get(session)
    await session.wait_publishes(2)
    sync.engine.on_input("button", True, 1.0)
    await session.wait_publishes(3)
    task.cancel()  # the link drops before the update is accepted
    await asyncio.gather(task, return_exceptions=True)
    second, stop2 = FakeSession(), asyncio.Event()
    task2 = asyncio.create_task(sync.run_session(second, stop2))
    published = await second.wait_publishes(2)  # get, then the kept button report
    assert published[1][1]["state"]["reported"] == {"button": True}
    task2.cancel()
    await asyncio.gather(task2, return_exceptions=True)


async def test_online_is_published_retained_on_connect_and_offline_on_clean_stop() -> None:
    bank, session, stop = new_bank(), FakeSession(), asyncio.Event()
    task = asyncio.create_task(make_sync(bank).run_session(session, stop))
    await session.wait_publishes(1)
    assert session.statuses == [("online", True)]
    await answer_initial_get(session)
    published = await session.wait_publishes(2)
    stop.set()
    final = (await session.wait_publishes(3))[2][1]
    session.reply(Reply.UPDATE_ACCEPTED, {"version": 9, "clientToken": final["clientToken"]})
    async with asyncio.timeout(3):
        await task
    assert session.statuses == [("online", True), ("offline", True)]
    assert published[1][0] == TOPICS.update


async def test_flood_of_deltas_is_rate_limited_to_the_last_value() -> None:
    bank, session, stop, clock = new_bank(), FakeSession(), asyncio.Event(), ManualClock()
    devices = {"led": BinaryOutputConfig(type="LED", pin=17)}
    codecs = {name: codec_for(device) for name, device in devices.items()}
    engine = DeviceEngine(
        bank=bank,
        codecs=codecs,
        min_intervals_s={"led": 0.2},
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    settings = ShadowLinkSettings(thing=THING, shadow=ShadowConfig(), codecs=codecs)
    sync = ShadowSync(settings, engine=engine)
    timers = asyncio.create_task(engine.run())
    task = asyncio.create_task(sync.run_session(session, stop))
    await session.wait_publishes(1)
    await answer_initial_get(session)
    await session.wait_publishes(2)
    for version in range(6, 56):  # 50 deltas in a burst
        session.reply(Reply.UPDATE_DELTA, {"version": version, "state": {"led": version % 2 == 0}})
    await until_quiet()
    assert len(bank.writes) == 1  # the first one; the rest wait for the interval
    await clock.advance(0.19)
    assert len(bank.writes) == 1
    await clock.advance(0.01)
    assert len(bank.writes) == 2
    assert bank.writes[-1] == ("led", False)  # version 55 is odd: the last value won
    published = await session.wait_publishes(4)
    reported = [body["state"]["reported"].get("led") for topic, body in published[2:]]
    assert reported[-1] is False  # the held-back value is reported once applied
    task.cancel()
    timers.cancel()
    await asyncio.gather(task, timers, return_exceptions=True)


async def until_quiet() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_gateway_status_entries_are_reported_now_and_in_full_reports(running: Any) -> None:
    sync, session, _bank = running
    await answer_initial_get(session)
    await session.wait_publishes(2)
    sync.report_gateway_status("ota", {"state": "idle"})
    _, update = (await session.wait_publishes(3))[2]
    assert update["state"]["reported"] == {"gateway": {"ota": {"state": "idle"}}}
    sync.report_gateway_status("ota", {"state": "idle"})  # unchanged: nothing sent
    await asyncio.sleep(0.05)
    assert len(session.published) == 3
    assert sync.full_reported()["gateway"]["ota"] == {"state": "idle"}  # type: ignore[index]


class ImmediateSession(FakeSession):
    """A session that can also queue a publish without waiting for its PUBACK (as the aiomqtt
    one can): the shadow protocol then sends an update at once when its sender is idle."""

    def __init__(self) -> None:
        super().__init__()
        self.immediate: list[str] = []

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        self.immediate.append(topic)
        self.published.append((topic, json.loads(payload)))
        self.new_publish.set()


async def test_a_delta_is_reported_while_it_is_handled_when_the_sender_is_idle() -> None:
    bank, session, stop = new_bank(), ImmediateSession(), asyncio.Event()
    sync = make_sync(bank)
    task = asyncio.create_task(sync.run_session(session, stop))
    await session.wait_publishes(1)
    await answer_initial_get(session)
    await session.wait_publishes(2)  # the full report
    await until_quiet()
    before, immediate = len(session.published), len(session.immediate)
    delta = {"version": 6, "state": {"led": True}}
    sync.handle_message(
        InboundMessage(TOPICS.reply(Reply.UPDATE_DELTA), json.dumps(delta).encode())
    )
    # No loop turn in between: the report was handed to the session by the handling itself.
    assert len(session.published) == before + 1
    topic, update = session.published[-1]
    assert topic == TOPICS.update and update["state"]["reported"] == {"led": True}
    assert session.immediate[immediate:] == [TOPICS.update]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
