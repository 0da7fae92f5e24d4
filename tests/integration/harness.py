"""The integration tests' harness: gateway configs for the test broker, and an in-process
gateway on mock GPIO (so tests can look at its pins), directly or through a fault proxy."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.app import Gateway, build_gateway
from gateway.config import GatewayConfig, load_config
from gateway.core.tls import client_context
from gateway.devcloud import MosquittoBroker
from gateway.devcloud.faultproxy import FaultProxy
from gateway.devices.gpio import make_pin_factory

FAST_RECONNECT = "  reconnect: {min_s: 0.05, max_s: 0.5, reset_after_s: 60}\n"

DEVICES = """\
  led:    {type: LED, pin: 17}
  relay:  {type: OutputDevice, pin: 27, active_high: false}
  fan:    {type: PWMLED, pin: 18}
  button: {type: Button, pin: 4, pull_up: true}
"""


@dataclass
class RunningGateway:
    gateway: Gateway
    factory: Any
    config: GatewayConfig

    @property
    def thing(self) -> str:
        return self.config.thing

    def pin(self, number: int) -> Any:
        return self.factory.pin(number)


def write_config(
    directory: Path,
    broker: MosquittoBroker,
    thing: str,
    *,
    devices: str = DEVICES,
    extra: str = "",
    port: int | None = None,
    mqtt_extra: str = "",
    keepalive_s: int = 30,
) -> Path:
    """A gateway config for ``thing`` on the test broker (or on ``port``, e.g. a fault proxy)."""
    creds = broker.credentials(thing)
    text = f"""\
thing: {thing}
mqtt:
  host: {broker.host}
  port: {port or broker.port}
  ca: {creds.ca}
  cert: {creds.cert}
  key: {creds.key}
  keepalive_s: {keepalive_s}
{mqtt_extra}gpio: {{pin_factory: mock}}
state_dir: {directory / "state"}
admin_socket: {directory / "admin.sock"}
devices:
{devices}{textwrap.dedent(extra)}"""
    path = directory / "gateway.yaml"
    path.write_text(text)
    return path


def reported(key: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: doc.get("state", {}).get("reported", {}).get(key) == value


@asynccontextmanager
async def running_gateway(config_path: Path, mock_dir: Path) -> AsyncIterator[RunningGateway]:
    """Run the gateway of ``config_path`` in this loop until the block ends (synced first)."""
    async with running_config(load_config(config_path), mock_dir) as running:
        yield running


@asynccontextmanager
async def running_config(config: GatewayConfig, mock_dir: Path) -> AsyncIterator[RunningGateway]:
    """Run a gateway for a loaded ``config`` in this loop until the block ends (synced first)."""
    factory = make_pin_factory("mock")
    gateway = build_gateway(config, pin_factory=factory, mock_dir=mock_dir)
    task = asyncio.ensure_future(gateway.run())
    try:
        async with asyncio.timeout(10):
            await gateway.shadow.synced.wait()
        yield RunningGateway(gateway, factory, config)
    finally:
        gateway.stop()
        await asyncio.wait_for(task, timeout=10)
        factory.close()


@asynccontextmanager
async def gateway_via(
    proxy: FaultProxy, broker: MosquittoBroker, directory: Path, thing: str, **options: Any
) -> AsyncIterator[RunningGateway]:
    path = write_config(
        directory, broker, thing, port=proxy.port, mqtt_extra=FAST_RECONNECT, **options
    )
    async with running_gateway(path, directory) as running:
        yield running


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def admin_client(broker: MosquittoBroker) -> AsyncIterator[aiomqtt.Client]:
    """A client with the dev cloud's own identity: it may publish on any shadow topic (as the
    cloud does, or an attacker holding such a credential could)."""
    creds = broker.credentials(broker.admin_identities[0])
    tls = client_context(creds.ca, creds.cert, creds.key)
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"admin-{uuid.uuid4().hex[:8]}",
        tls_context=tls,
        protocol=aiomqtt.ProtocolVersion.V311,
    ) as client:
        yield client
