"""Pins, reported and desired always converge (issue 19), whatever the interleaving.

The gateway's ShadowSync talks to the dev cloud's own shadow store (the same code the dev
cloud's broker-side service runs, written from AWS's documentation) through an in-memory
session whose replies the test holds back and releases: hypothesis drives random interleavings
of desired writes (valid and invalid), replies held back while more writes land (so the
gateway's version-checked clears meet 409s), reconnects that lose every reply on the wire, and
button presses. After everything is delivered, the devices, ``reported`` and ``desired`` must
agree: every device's reported value is its pin, a valid desired value is on the pin (and
cleared from desired), an invalid one is kept out and named in ``reported.gateway.errors``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import BinaryOutputConfig, DigitalInputConfig, PwmOutputConfig, ShadowConfig
from gateway.core.ports import InboundMessage
from gateway.core.values import codec_for
from gateway.devcloud.shadowdoc import ShadowStore
from gateway.devices.engine import DeviceEngine
from gateway.errors import MqttConnectionError
from gateway.links.shadow import protocol as shadow_protocol
from gateway.links.shadow.settings import ShadowLinkSettings
from gateway.links.shadow.sync import ShadowSync
from gateway.links.shadow.topics import ShadowTopics
from tests.fakes import FakeBank

THING = "pi-conv"
TOPICS = ShadowTopics(THING)
DEVICES = {
    "led": BinaryOutputConfig(type="LED", pin=17),
    "fan": PwmOutputConfig(type="PWMLED", pin=18),
    "button": DigitalInputConfig(type="Button", pin=4),
}
VALID = {"led": [True, False], "fan": [0.0, 0.25, 1.0]}
INVALID = {"led": [1, "on"], "fan": [7, -1, 10**401]}


class StoreSession:
    """One connection to the shadow store: the gateway's requests are handled at once, and
    every reply waits in ``held`` until the test releases it (in order, as MQTT keeps it)."""

    def __init__(self, store: ShadowStore, held: deque[InboundMessage]) -> None:
        self.store = store
        self.held = held
        self.inbox: asyncio.Queue[InboundMessage | None] = asyncio.Queue()

    async def subscribe(self, topics: Sequence[str]) -> None:
        return None

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        for response in self.store.handle(topic, payload):
            body = json.dumps(response.payload).encode()
            self.held.append(InboundMessage(response.topic, body))

    async def messages(self) -> AsyncIterator[InboundMessage]:
        while (message := await self.inbox.get()) is not None:
            yield message
        raise MqttConnectionError("connection lost (test)")


class World:
    def __init__(self) -> None:
        self.store = ShadowStore(clock=lambda: 1_700_000_000.0)
        self.bank = FakeBank({"led": False, "fan": 0.0, "button": False})
        codecs = {name: codec_for(device) for name, device in DEVICES.items()}
        self.sync = ShadowSync(
            ShadowLinkSettings(thing=THING, shadow=ShadowConfig(), codecs=codecs),
            engine=DeviceEngine(bank=self.bank, codecs=codecs),
        )
        self.sync.engine.prime(dict(self.bank.pins))
        self.held: deque[InboundMessage] = deque()
        self.session: StoreSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()

    async def connect(self) -> None:
        self.held.clear()
        self.session = StoreSession(self.store, self.held)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.sync.run_session(self.session, self.stop))
        await settle_loop()

    async def disconnect(self) -> None:
        assert self.session is not None and self.task is not None
        self.held.clear()  # every reply on the wire is lost with the connection
        self.session.inbox.put_nowait(None)
        try:
            await self.task
        except* MqttConnectionError:
            pass

    def write_desired(self, name: str, value: object) -> None:
        """Another client (the cloud console) sets desired; its delta reaches the gateway."""
        payload = json.dumps({"state": {"desired": {name: value}}}).encode()
        for response in self.store.handle(f"{TOPICS.prefix}/update", payload):
            if response.topic.endswith("/update/delta"):
                self.held.append(
                    InboundMessage(response.topic, json.dumps(response.payload).encode())
                )

    async def release(self, count: int) -> None:
        assert self.session is not None
        for _ in range(min(count, len(self.held))):
            self.session.inbox.put_nowait(self.held.popleft())
            await settle_loop()

    async def drain(self) -> None:
        """Deliver everything until nothing more is sent (reports wait out their 50 ms)."""
        for _ in range(200):
            await self.release(len(self.held))
            await asyncio.sleep(0.06)
            await settle_loop()
            if not self.held and not self.sync.status()["in_flight"]:
                await asyncio.sleep(0.06)
                await settle_loop()
                if not self.held:
                    return
        raise AssertionError("the gateway and the shadow store never went quiet")

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def settle_loop() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("desired"),
            st.sampled_from(["led", "fan"]).flatmap(
                lambda name: st.tuples(st.just(name), st.sampled_from(VALID[name] + INVALID[name]))
            ),
        ),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=6)),
        st.tuples(st.just("press"), st.booleans()),
        st.tuples(st.just("reconnect"), st.none()),
    ),
    min_size=1,
    max_size=25,
)


def assert_converged(world: World) -> None:
    document = world.store.document(THING)
    assert document is not None
    reported = document["state"].get("reported", {})
    desired = document["state"].get("desired", {})
    errors = reported.get("gateway", {}).get("errors", {})
    for name, pin in world.bank.pins.items():
        assert reported.get(name) == pin, f"{name}: reported {reported.get(name)!r}, pin {pin!r}"
    for name, value in desired.items():
        if name in VALID and value in VALID[name] and type(value) is type(VALID[name][0]):
            assert world.bank.pins[name] == value, f"{name}: desired {value!r} not on the pin"
        else:
            assert name in errors, f"{name}: invalid desired {value!r} not in errors"
    delta = document["state"].get("delta", {})
    assert set(delta) <= set(errors), f"delta {delta} left unexplained"
    for name in errors:
        assert name in desired, f"{name}: error {errors[name]!r} kept after its value was taken"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=actions)
async def test_pins_reported_and_desired_converge_under_any_interleaving(
    script: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rate limit has its own tests; here it would only make each example wait in real time.
    monkeypatch.setattr(shadow_protocol, "MAX_REQUESTS_PER_S", 100_000)
    world = World()
    try:
        await world.connect()
        for kind, argument in script:
            if kind == "desired":
                world.write_desired(*argument)
            elif kind == "release":
                await world.release(argument)
            elif kind == "press":
                world.bank.pins["button"] = argument
                world.sync.engine.on_input("button", argument, 1_700_000_000.0)
                await settle_loop()
            else:
                await world.disconnect()
                await world.connect()
        await world.drain()
        assert_converged(world)
    finally:
        await world.close()


async def test_three_desired_writes_back_to_back_leave_pin_and_shadow_agreeing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reported case: led true, false, true with no gap, every reply held back until all
    three are in the shadow (so two of the gateway's clears meet 409)."""
    monkeypatch.setattr(shadow_protocol, "MAX_REQUESTS_PER_S", 100_000)
    world = World()
    try:
        await world.connect()
        await world.drain()
        for value in (True, False, True):
            world.write_desired("led", value)
        await world.release(1)  # the first delta: applied, its clear sent and held
        await world.release(1)
        await world.drain()
        assert_converged(world)
        assert world.bank.pins["led"] is True
    finally:
        await world.close()
