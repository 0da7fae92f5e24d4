"""The connection loop's commands on a fake connector: reconnect, reload with and without MQTT
changes, switching to renewed credentials, and a stop during each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.core.backoff import Backoff
from gateway.errors import MqttConnectionError
from gateway.links.connection import ConnectionLoop, ReloadOutcome


class FakeConnector:
    """``connect()`` fails while ``failures`` lasts (or forever with ``broken``)."""

    def __init__(self, name: str, *, failures: int = 0, broken: bool = False) -> None:
        self.name = name
        self.failures = failures
        self.broken = broken
        self.attempts = 0
        self.connects = 0

    async def prepare(self) -> None:
        return None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        self.attempts += 1
        if self.broken or self.failures:
            self.failures = max(0, self.failures - 1)
            raise MqttConnectionError(f"{self.name}: refused")
        self.connects += 1
        yield self


class Sessions:
    """The session runner: records which connection each session ran on, and ends on stop."""

    def __init__(self) -> None:
        self.ran_on: list[str] = []
        self.started = asyncio.Event()

    async def __call__(self, session: Any, stop: asyncio.Event) -> None:
        self.ran_on.append(session.name)
        self.started.set()
        await stop.wait()


def fast_backoff(max_s: float = 0.05) -> Backoff:
    return Backoff(0.01, max_s, 60)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def started(loop: ConnectionLoop) -> asyncio.Task[None]:
    return asyncio.create_task(loop.run())


async def finished(task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(2):
        await task


def outcome(applied: bool, reconnect: bool) -> Callable[[], Awaitable[ReloadOutcome]]:
    async def apply() -> ReloadOutcome:
        return ReloadOutcome(applied=applied, reconnect=reconnect)

    return apply


async def test_a_failed_connect_is_retried_after_backoff() -> None:
    connector, sessions = FakeConnector("a", failures=2), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    await until(lambda: sessions.ran_on == ["a"])
    assert connector.attempts == 3 and loop.reconnects == 2 and loop.first_attempt.is_set()
    loop.stop()
    await finished(task)


async def test_reload_without_mqtt_changes_restarts_the_session_on_the_same_connection() -> None:
    connector, sessions = FakeConnector("a"), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    await until(lambda: len(sessions.ran_on) == 1)
    assert await loop.reload(outcome(applied=True, reconnect=False))
    await until(lambda: len(sessions.ran_on) == 2)
    assert connector.connects == 1
    loop.stop()
    await finished(task)


async def test_reload_with_mqtt_changes_reconnects() -> None:
    connector, sessions = FakeConnector("a"), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    await until(lambda: len(sessions.ran_on) == 1)
    assert await loop.reload(outcome(applied=True, reconnect=True))
    await until(lambda: len(sessions.ran_on) == 2)
    assert connector.connects == 2
    loop.stop()
    await finished(task)


async def test_a_reload_that_fails_to_apply_says_so() -> None:
    connector, sessions = FakeConnector("a"), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    await until(lambda: len(sessions.ran_on) == 1)
    assert not await loop.reload(outcome(applied=False, reconnect=False))
    loop.stop()
    await finished(task)


async def test_reload_while_disconnected_is_applied_without_waiting_out_the_backoff() -> None:
    connector, sessions = FakeConnector("a", broken=True), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(max_s=60), sessions)
    loop.backoff.attempt = 30  # the next wait would be up to a minute
    task = await started(loop)
    await until(lambda: connector.attempts >= 1)
    async with asyncio.timeout(1):
        assert await loop.reload(outcome(applied=True, reconnect=True))
    loop.stop()
    await finished(task)


async def test_switching_to_renewed_credentials_reconnects_and_reports_the_connect() -> None:
    old, new, sessions = FakeConnector("old"), FakeConnector("new"), Sessions()
    loop = ConnectionLoop(old, fast_backoff(), sessions)
    task = await started(loop)
    await until(lambda: sessions.ran_on == ["old"])
    assert await loop.switch_connector(new, timeout_s=2)
    await until(lambda: sessions.ran_on == ["old", "new"])
    assert loop.connector is new
    loop.stop()
    await finished(task)


async def test_switching_to_credentials_that_never_connect_times_out() -> None:
    old, new, sessions = FakeConnector("old"), FakeConnector("new", broken=True), Sessions()
    loop = ConnectionLoop(old, fast_backoff(), sessions)
    task = await started(loop)
    await until(lambda: sessions.ran_on == ["old"])
    assert not await loop.switch_connector(new, timeout_s=0.2)
    assert new.attempts >= 1 and "new" not in sessions.ran_on
    loop.stop()
    await finished(task)


async def test_stop_during_a_session_ends_the_loop() -> None:
    connector, sessions = FakeConnector("a"), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    await sessions.started.wait()
    loop.stop()
    await finished(task)
    assert connector.connects == 1


async def test_stop_during_the_backoff_wait_ends_the_loop_at_once() -> None:
    connector, sessions = FakeConnector("a", broken=True), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(max_s=60), sessions)
    loop.backoff.attempt = 30
    task = await started(loop)
    await until(lambda: connector.attempts >= 1)
    loop.stop()
    await finished(task)


async def test_a_reload_queued_behind_a_stop_is_answered_not_applied() -> None:
    connector, sessions = FakeConnector("a"), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    await sessions.started.wait()
    loop.stop()
    applied = asyncio.create_task(loop.reload(outcome(applied=True, reconnect=False)))
    await finished(task)
    async with asyncio.timeout(1):
        assert not await applied


async def test_stop_while_a_switch_waits_for_its_connect_answers_the_renewer() -> None:
    old, new, sessions = FakeConnector("old"), FakeConnector("new", broken=True), Sessions()
    loop = ConnectionLoop(old, fast_backoff(max_s=60), sessions)
    task = await started(loop)
    await sessions.started.wait()
    switch = asyncio.create_task(loop.switch_connector(new, timeout_s=30))
    await until(lambda: new.attempts >= 1)
    loop.stop()
    await finished(task)
    async with asyncio.timeout(1):
        assert not await switch


@pytest.mark.parametrize("failures", [0, 1])
async def test_the_first_attempt_is_marked_ended_either_way(failures: int) -> None:
    connector, sessions = FakeConnector("a", failures=failures), Sessions()
    loop = ConnectionLoop(connector, fast_backoff(), sessions)
    task = await started(loop)
    async with asyncio.timeout(2):
        await loop.first_attempt.wait()
    loop.stop()
    await finished(task)


async def test_reconnect_now_ends_the_session_and_connects_again_at_once() -> None:
    connector, sessions = FakeConnector("a"), Sessions()
    loop = ConnectionLoop(connector, Backoff(30, 60, 60), sessions)
    task = await started(loop)
    await until(lambda: sessions.ran_on == ["a"])
    loop.reconnect_now()
    await until(lambda: connector.connects == 2 and len(sessions.ran_on) == 2)
    assert connector.attempts == 2 and loop.reconnects == 0  # no failure, no backoff
    loop.stop()
    await finished(task)


async def test_reconnect_now_cuts_the_backoff_wait_short() -> None:
    connector, sessions = FakeConnector("a", failures=1), Sessions()
    loop = ConnectionLoop(connector, Backoff(30, 60, 60, lambda a, b: b), sessions)  # 30 s
    task = await started(loop)
    await until(lambda: connector.attempts == 1 and loop.reconnects == 1)
    loop.reconnect_now()
    await until(lambda: sessions.ran_on == ["a"])
    loop.stop()
    await finished(task)


async def test_reconnect_now_after_the_loop_stopped_is_ignored() -> None:
    loop = ConnectionLoop(FakeConnector("a"), fast_backoff(), Sessions())
    task = await started(loop)
    loop.stop()
    await finished(task)
    loop.reconnect_now()
    assert loop.commands.take_all() == []
