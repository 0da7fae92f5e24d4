"""Wiring: the one place that connects config, devices, MQTT, the shadow and the admin socket.

One ``asyncio.TaskGroup`` supervises the named tasks; SIGTERM/SIGINT set a stop event, the
shadow reports its final state, and everything is closed within ``SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping
from typing import Any

import structlog

from gateway import __version__
from gateway.adapters.gpio import GpiozeroBank, make_pin_factory
from gateway.adapters.mqtt import (
    AiomqttConnector,
    CertificateRejectedError,
    MqttSettings,
)
from gateway.admin import serve_admin
from gateway.backoff import Backoff
from gateway.config import (
    SENSOR_CONFIGS,
    GatewayConfig,
    Mcp3008Config,
    SystemSensorConfig,
    is_output,
)
from gateway.errors import GatewayError, MqttConnectionError
from gateway.ports import DeviceBank, MqttConnector
from gateway.reconcile import sensor_changed
from gateway.shadow import ShadowSync
from gateway.values import JsonValue, codec_for

log = structlog.get_logger()

SHUTDOWN_TIMEOUT_S = 4.0  # inside the 5 s users (and systemd's stop job) are promised


def mqtt_settings(config: GatewayConfig) -> MqttSettings:
    mqtt = config.mqtt
    return MqttSettings(
        host=mqtt.host,
        port=mqtt.port,
        client_id=config.thing,
        ca=mqtt.ca,
        cert=mqtt.cert,
        key=mqtt.key,
        keepalive_s=mqtt.keepalive_s,
        connect_timeout_s=mqtt.connect_timeout_s,
    )


class Gateway:
    """A configured gateway; ``run()`` until stopped."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        bank: DeviceBank,
        connector: MqttConnector,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.bank = bank
        self.connector = connector
        self.backoff = backoff or Backoff()
        self.stop_event = asyncio.Event()
        self.admin_ready = asyncio.Event()
        self.shadow = ShadowSync(
            thing=config.thing,
            shadow=config.shadow,
            bank=bank,
            codecs={name: codec_for(device) for name, device in config.devices.items()},
            restore=frozenset(
                name
                for name, device in config.devices.items()
                if is_output(device) and getattr(device, "restore", False)
            ),
        )
        self.reconnects = 0

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        """Open the devices, then sync until ``stop()``; devices are closed on the way out."""
        await self.connector.prepare()
        self.bank.open(self.shadow.on_input)
        try:
            self.shadow.prime(await self._read_all())
            log.info(
                "gateway_started",
                version=__version__,
                devices=len(self.config.devices),
                mock_gpio=self.bank.is_mock,
            )
            async with asyncio.TaskGroup() as group:
                connection = group.create_task(self._connection_loop(), name="mqtt_connection")
                poller = group.create_task(self._poll_sensors(), name="sensor_poller")
                admin = group.create_task(
                    serve_admin(self.config.admin_socket, self._admin, self.admin_ready),
                    name="admin_socket",
                )
                await self.stop_event.wait()
                log.info("gateway_stopping")
                poller.cancel()
                try:
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                        await asyncio.shield(connection)
                except TimeoutError:
                    log.warning("shutdown_timed_out", timeout_s=SHUTDOWN_TIMEOUT_S)
                    connection.cancel()
                admin.cancel()
        finally:
            self.bank.close()
            log.info("gateway_stopped")

    async def _read_all(self) -> dict[str, JsonValue]:
        values: dict[str, JsonValue] = {}
        for name, device in self.config.devices.items():
            if isinstance(device, SENSOR_CONFIGS):
                values[name] = await asyncio.to_thread(self.bank.read, name)
            else:
                values[name] = self.bank.read(name)
        return values

    async def _connection_loop(self) -> None:
        """Connect, sync, and reconnect with backoff until stopped."""
        while not self.stop_event.is_set():
            connected_at: float | None = None
            delay: float
            try:
                async with self.connector.connect() as session:
                    connected_at = time.monotonic()
                    await self.shadow.run_session(session, self.stop_event)
                return  # clean stop: final state reported, session closed
            except* CertificateRejectedError as group:
                log.error("mqtt_certificate_rejected", error=str(group.exceptions[0]))
                delay = self.backoff.at_cap()  # retrying sooner cannot fix a certificate
            except* MqttConnectionError as group:
                lived = None if connected_at is None else time.monotonic() - connected_at
                delay = self.backoff.next_delay(lived)
                log.warning(
                    "mqtt_connection_failed",
                    error=str(group.exceptions[0]),
                    retry_in_s=round(delay, 2),
                )
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop_event.wait()

    async def _poll_sensors(self) -> None:
        """Read each sensor on its own interval; report changes of at least ``min_change``."""
        sensors: dict[str, SystemSensorConfig | Mcp3008Config] = {
            name: device
            for name, device in self.config.devices.items()
            if isinstance(device, SENSOR_CONFIGS)
        }
        if not sensors:
            return
        loop = asyncio.get_running_loop()
        due = dict.fromkeys(sensors, loop.time())
        while True:
            name = min(due, key=due.__getitem__)
            await asyncio.sleep(max(0.0, due[name] - loop.time()))
            device = sensors[name]
            due[name] = loop.time() + device.interval_s
            try:
                value = await asyncio.to_thread(self.bank.read, name)
            except GatewayError as exc:
                log.warning("sensor_read_failed", device=name, error=str(exc))
                continue
            if sensor_changed(self.shadow.values.get(name), value, device.min_change):
                self.shadow.on_input(name, value, time.time())

    async def _admin(self, request: Mapping[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        if command == "status":
            return {
                **self.shadow.status(),
                "version": __version__,
                "mock_gpio": self.bank.is_mock,
                "reconnects": self.reconnects,
            }
        if command == "mock_set":
            if not self.bank.is_mock:
                raise GatewayError("refused: this gateway drives real GPIO, not mock pins")
            name = request.get("name")
            if not isinstance(name, str) or name not in self.config.devices:
                raise GatewayError(f"no device named {name!r}")
            self.bank.drive_mock_input(name, request.get("value"))
            return {"device": name, "value": request.get("value")}
        raise GatewayError(f"unknown command {command!r}")


def build_gateway(config: GatewayConfig, *, mock_gpio: bool = False) -> Gateway:
    """The production wiring: gpiozero devices and aiomqtt, as configured."""
    mock = mock_gpio or config.mock_gpio
    factory = make_pin_factory("mock" if mock else config.gpio.pin_factory)
    bank = GpiozeroBank(
        config.devices,
        factory,
        loop=asyncio.get_running_loop(),
        is_mock=mock,
        mock_dir=config.state_dir / "mock",
    )
    return Gateway(config, bank=bank, connector=AiomqttConnector(mqtt_settings(config)))


async def run_gateway(config: GatewayConfig, *, mock_gpio: bool = False) -> None:
    """Run until SIGTERM/SIGINT; used by ``edge-gateway run``."""
    structlog.contextvars.bind_contextvars(thing=config.thing)
    gateway = build_gateway(config, mock_gpio=mock_gpio)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, gateway.stop)
    try:
        await gateway.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
