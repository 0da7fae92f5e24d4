"""Reading the devices: every value at start, and the sensors on their own intervals.

Sensor reads may block (a file, an SPI transfer), so each goes through a thread; a change of
at least ``min_change`` is handed to the device core like any input change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog

from gateway.config import SENSOR_CONFIGS, DeviceConfig, Mcp3008Config, SystemSensorConfig
from gateway.core.ports import DeviceBank
from gateway.core.values import JsonValue
from gateway.devices.engine import DeviceEngine
from gateway.errors import GatewayError

log = structlog.get_logger()


async def read_all(devices: Mapping[str, DeviceConfig], bank: DeviceBank) -> dict[str, JsonValue]:
    """Every device's current value (sensors read in a thread)."""
    values: dict[str, JsonValue] = {}
    for name, device in devices.items():
        if isinstance(device, SENSOR_CONFIGS):
            values[name] = await asyncio.to_thread(bank.read, name)
        else:
            values[name] = bank.read(name)
    return values


async def poll_sensors(
    devices: Mapping[str, DeviceConfig], bank: DeviceBank, engine: DeviceEngine
) -> None:
    """Read each sensor on its own interval; report changes of at least ``min_change``."""
    sensors: dict[str, SystemSensorConfig | Mcp3008Config] = {
        name: device for name, device in devices.items() if isinstance(device, SENSOR_CONFIGS)
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
            value = await asyncio.to_thread(bank.read, name)
        except GatewayError as exc:
            log.warning("sensor_read_failed", device=name, error=str(exc))
            continue
        if sensor_changed(engine.values.get(name), value, device.min_change):
            engine.on_input(name, value, time.time())


def sensor_changed(previous: JsonValue, current: JsonValue, min_change: float) -> bool:
    """Whether a polled sensor value is worth reporting (first value, or moved by min_change)."""
    if previous is None or current is None:
        return previous != current
    if isinstance(previous, int | float) and isinstance(current, int | float):
        delta = abs(float(current) - float(previous))
        return delta > 0 and delta >= min_change
    return previous != current
