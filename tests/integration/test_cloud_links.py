"""Cloud links beside the shadow: the gateway runs each configured link's own connection loop
and tasks in its task group, shows their status, and ends them within the shutdown bound."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.app import Gateway, build_gateway
from gateway.config import load_config
from gateway.core.ports import DeviceCore, LinkPlan, MqttSession
from gateway.core.values import JsonValue
from gateway.devcloud import MosquittoBroker, ShadowService
from gateway.devices.gpio import GpiozeroBank, make_pin_factory
from gateway.links.connection import NoShadowConnector
from gateway.links.mqtt import AiomqttConnector
from gateway.wiring import mqtt_settings
from tests.integration.harness import admin_client, until, write_config


class EchoLink:
    """A minimal second cloud: publishes every device change on its own topic."""

    def __init__(self, core: DeviceCore, topic: str) -> None:
        self.connected = False
        self.sessions = 0
        self._topic = topic
        self._pending: asyncio.Queue[tuple[str, JsonValue]] = asyncio.Queue()
        core.add_listener(self)

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        self._pending.put_nowait((name, value))

    def on_deferred_applied(self, name: str, value: JsonValue) -> None: ...

    def on_deferred_dropped(self, name: str, reason: str) -> None: ...

    def on_failsafe(self, name: str) -> None: ...

    async def run_session(self, session: MqttSession, stop: asyncio.Event) -> None:
        self.connected = True
        self.sessions += 1
        try:
            while not stop.is_set():
                waiter = asyncio.ensure_future(self._pending.get())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({waiter, stopper}, return_when="FIRST_COMPLETED")
                stopper.cancel()
                if waiter not in done:
                    waiter.cancel()
                    return
                name, value = waiter.result()
                await session.publish(self._topic, json.dumps({name: value}).encode())
        finally:
            self.connected = False

    def report_gateway_status(self, key: str, value: JsonValue) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "sessions": self.sessions}


async def test_a_link_beside_the_shadow_hears_the_device_core_and_shows_in_status(
    broker: MosquittoBroker, shadow_service: ShadowService, tmp_path: Path, thing: str
) -> None:
    config = load_config(write_config(tmp_path, broker, thing))
    topic = f"things/{thing}/echo"
    ticks: list[int] = []
    links: list[EchoLink] = []

    async def tick() -> None:
        ticks.append(1)
        await asyncio.Event().wait()

    def plans(core: DeviceCore) -> list[LinkPlan]:
        link = EchoLink(core, topic)
        links.append(link)
        settings = dataclasses.replace(mqtt_settings(config), client_id=f"{thing}-echo")
        return [LinkPlan("echo", link, AiomqttConnector(settings), {"tick": tick})]

    factory = make_pin_factory("mock")
    gateway = build_gateway(config, pin_factory=factory, mock_dir=tmp_path)
    gateway = type(gateway)(
        config,
        bank=gateway.bank,
        connector=gateway.connector,
        extra_links=plans,
    )
    task = asyncio.ensure_future(gateway.run())
    try:
        async with admin_client(broker) as cloud:
            await cloud.subscribe(topic, qos=1)
            async with asyncio.timeout(10):
                await gateway.shadow.synced.wait()
            await until(lambda: bool(links) and links[0].connected)
            assert ticks == [1]
            assert gateway.status()["links"]["echo"] == {
                "connected": True,
                "sessions": 1,
                "reconnects": 0,
            }
            factory.pin(4).drive_low()  # the button (pull-up): pressed
            async with asyncio.timeout(5):
                message: aiomqtt.Message = await anext(aiter(cloud.messages))
            assert json.loads(bytes(message.payload)) == {"button": True}  # type: ignore[arg-type]
    finally:
        gateway.stop()
        await asyncio.wait_for(task, timeout=10)
        factory.close()
    assert not links[0].connected
    assert gateway._tasks["echo_connection"].done()
    assert gateway._tasks["echo_tick"].done()


async def test_a_gateway_without_the_shadow_runs_its_other_link_alone(
    broker: MosquittoBroker, tmp_path: Path, thing: str
) -> None:
    with_shadow = load_config(write_config(tmp_path, broker, thing))
    # Only another cloud: no 'mqtt' and no 'thing' (the cloud's block is the link's business).
    config = dataclasses.replace(with_shadow, mqtt=None, thing=None)
    assert not config.has_shadow
    topic = f"things/{thing}/echo"
    links: list[EchoLink] = []

    def plans(core: DeviceCore) -> list[LinkPlan]:
        links.append(EchoLink(core, topic))
        settings = dataclasses.replace(mqtt_settings(with_shadow), client_id=f"{thing}-echo")
        return [LinkPlan("echo", links[0], AiomqttConnector(settings))]

    factory = make_pin_factory("mock")
    gateway = Gateway(
        config,
        bank=GpiozeroBank(config.devices, factory, loop=asyncio.get_running_loop(), is_mock=True),
        connector=NoShadowConnector(),
        extra_links=plans,
    )
    assert gateway.shadow is None
    task = asyncio.ensure_future(gateway.run())
    try:
        async with admin_client(broker) as cloud:
            await cloud.subscribe(topic, qos=1)
            await until(lambda: bool(links) and links[0].connected)
            status = gateway.status()
            assert status["links"]["echo"]["connected"] is True
            assert "shadow" not in status
            assert gateway.status_line().startswith("echo connected; 4 devices")
            assert gateway.links_healthy()
            factory.pin(4).drive_low()
            async with asyncio.timeout(5):
                message: aiomqtt.Message = await anext(aiter(cloud.messages))
            assert json.loads(bytes(message.payload)) == {"button": True}  # type: ignore[arg-type]
            assert await gateway.reload() is False  # no config file: nothing to re-read
    finally:
        gateway.stop()
        await asyncio.wait_for(task, timeout=10)
        factory.close()
    assert not links[0].connected
