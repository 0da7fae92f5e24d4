"""Fixtures shared by the integration tests: a unique thing, an in-process gateway on mock
GPIO against the session broker, and a fault proxy in front of that broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.gpio import GpiozeroBank, make_pin_factory
from gateway.adapters.mqtt import AiomqttConnector
from gateway.app import Gateway, mqtt_settings
from gateway.config import load_config
from gateway.devcloud import MosquittoBroker
from gateway.devcloud.faultproxy import FaultProxy
from tests.integration.test_gateway import RunningGateway, write_config


@pytest.fixture
def thing() -> str:
    return f"pi-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_gateway(broker: MosquittoBroker, tmp_path: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(thing: str, **options: Any) -> AsyncIterator[RunningGateway]:
        config = load_config(write_config(tmp_path, broker, thing, **options))
        factory = make_pin_factory("mock")
        bank = GpiozeroBank(
            config.devices,
            factory,
            loop=asyncio.get_running_loop(),
            is_mock=True,
            mock_dir=tmp_path / "mock",
        )
        gateway = Gateway(config, bank=bank, connector=AiomqttConnector(mqtt_settings(config)))
        task = asyncio.create_task(gateway.run(), name="gateway_under_test")
        try:
            async with asyncio.timeout(10):
                await gateway.shadow.synced.wait()
            yield RunningGateway(gateway, factory, config)
        finally:
            gateway.stop()
            await asyncio.wait_for(task, timeout=10)
            factory.close()

    return start


@pytest.fixture
async def proxy(broker: MosquittoBroker) -> AsyncIterator[FaultProxy]:
    fault = FaultProxy(broker.host, broker.port)
    await fault.start()
    yield fault
    await fault.stop()
