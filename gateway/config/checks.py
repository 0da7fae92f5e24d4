"""Checks across devices and keys, made on a validated config (pure, no I/O).

Shared pins (SPI buses aside), follows and interlocks that cannot work, transforms that cannot
be undone, fail-safe values the device would refuse, and the shadow document's size budget
(from which ``error_reason_chars`` derives how long an error reason may be). The value codecs
come in as data (``codec_for``), so the config does not depend on the code that applies values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from gateway.config.pins import is_spi_field, spi_pins
from gateway.config.schema import (
    CLOUD_BLOCKS,
    OUTPUT_CONFIGS,
    BinaryOutputConfig,
    DeviceConfig,
    DigitalInputConfig,
    GatewayConfig,
    Mcp3008Config,
    OutputConfig,
    RgbLedConfig,
    SystemSensorConfig,
)
from gateway.config.yamlsource import KeyPath
from gateway.errors import DeviceValueError

# AWS IoT limits the config must respect (Device Shadow service quotas).
SHADOW_DOCUMENT_LIMIT_BYTES = 8 * 1024
GATEWAY_STATUS_ALLOWANCE_BYTES = 1024
# reported.gateway.errors holds at most one reason per configured device, at most this long;
# when many devices leave less room, reasons are cut shorter (never below the minimum, which the
# size check counts for every device), so the worst case always fits the shadow's limit.
ERROR_REASON_CHARS = 120
MIN_ERROR_REASON_CHARS = 16

Problem = tuple[KeyPath, str]


class Codec(Protocol):
    """The part of a device's value codec the checks use (``gateway.core.values.ValueCodec``)."""

    def parse_desired(self, value: object) -> object: ...


CodecFactory = Callable[[Any], Codec]


def _device_pins(device: DeviceConfig) -> dict[str, int]:
    if isinstance(device, Mcp3008Config):
        return spi_pins(device.spi_port, device.spi_device)
    return device.pins()


def cross_field_problems(
    config: GatewayConfig, codec_for: CodecFactory | None = None
) -> list[Problem]:
    """Problems that involve several devices: shared pins and the shadow size budget."""
    problems: list[Problem] = []
    owners: dict[int, tuple[str, str]] = {}
    for name, device in config.devices.items():
        # MCP3008 channels share the SPI bus (and a chip's select line) with each other.
        shared_bus = isinstance(device, Mcp3008Config)
        for field, pin in _device_pins(device).items():
            owner = owners.get(pin)
            if owner is not None and not (shared_bus and is_spi_field(owner[1])):
                problems.append(
                    (
                        ("devices", name, field),
                        f"GPIO{pin} is already used by device '{owner[0]}' ({owner[1]}); "
                        "expected a pin no other device uses",
                    )
                )
            elif owner is None:
                owners[pin] = (name, field)
    problems += behaviour_problems(config, codec_for)
    problems += cloud_problems(config)
    size = _reported_size_estimate(config)
    if size > SHADOW_DOCUMENT_LIMIT_BYTES:
        problems.append(
            (
                ("devices",),
                f"the reported document would be about {size} bytes; expected at most "
                f"{SHADOW_DOCUMENT_LIMIT_BYTES} (AWS's shadow limit): use fewer devices or "
                "shorter names",
            )
        )
    return problems


def cloud_problems(config: GatewayConfig) -> list[Problem]:
    """At least one cloud; the shadow link needs both ``thing`` and ``mqtt``, and so do the
    parts that work on its identity (check-in, provisioning, AWS credentials)."""
    problems: list[Problem] = []
    if not any(getattr(config, block) is not None for block in CLOUD_BLOCKS):
        others = ", ".join(f"'{block}'" for block in CLOUD_BLOCKS[1:])
        problems.append(
            (
                ("mqtt",),
                "required key is missing: expected 'mqtt' (the AWS IoT shadow's broker)"
                + (f" or another cloud's block ({others})" if others else ""),
            )
        )
    elif config.thing is not None and config.mqtt is None:
        problems.append((("mqtt",), "required key is missing: the broker of the 'thing' given"))
    for key in ("checkin", "provision", "credentials"):
        if getattr(config, key) is not None and not config.has_shadow:
            problems.append(((key,), "needs the shadow link: expected 'thing' and 'mqtt'"))
    return problems


def behaviour_problems(
    config: GatewayConfig, codec_for: CodecFactory | None = None
) -> list[Problem]:
    """Transforms, fail-safe values, follows and interlocks that cannot work as configured."""
    problems: list[Problem] = []
    devices = config.devices
    for name, device in devices.items():
        where: KeyPath = ("devices", name)
        if device.has_transform and isinstance(device, RgbLedConfig):
            problems.append(((*where, "type"), "transforms apply to single values, not RGBLED"))
            continue
        if isinstance(device, OUTPUT_CONFIGS) and not device.invertible:
            problems.append(
                (
                    (*where, "map"),
                    "an output's map must give distinct values so desired values can be "
                    "mapped back; expected one shadow value per device value",
                )
            )
            continue
        if not isinstance(device, OUTPUT_CONFIGS):
            continue
        if codec_for is not None:
            problems += _fail_safe_problems(name, device, codec_for(device))
        if device.follow is not None:
            target = devices.get(device.follow.device)
            if not isinstance(device, BinaryOutputConfig):
                problems.append(((*where, "follow"), "only on/off outputs can follow a device"))
            elif target is None:
                problems.append(
                    (
                        (*where, "follow"),
                        f"unknown device {device.follow.device!r}; expected "
                        "a device name from this config",
                    )
                )
            elif not isinstance(target, DigitalInputConfig | BinaryOutputConfig):
                problems.append(
                    (
                        (*where, "follow"),
                        f"{device.follow.device!r} is not an on/off device; "
                        "expected a digital input or an on/off output",
                    )
                )
    problems += _follow_cycles(config)
    for index, group in enumerate(config.interlock_groups):
        for member in group:
            interlocked = devices.get(member)
            if interlocked is None:
                problems.append(
                    (("interlock", index), f"unknown device {member!r}; expected output names")
                )
            elif not isinstance(interlocked, OUTPUT_CONFIGS):
                problems.append(
                    (
                        ("interlock", index),
                        f"{member!r} is an input; only outputs can be interlocked",
                    )
                )
        if len(set(group)) < 2:
            problems.append((("interlock", index), "an interlock group needs two or more outputs"))
    return problems


def _fail_safe_problems(name: str, device: OutputConfig, codec: Codec) -> list[Problem]:
    """Fail-safe values the device's codec would refuse as a desired value."""
    problems: list[Problem] = []
    for field, value in (
        ("on_disconnect", device.on_disconnect.value if device.on_disconnect else None),
        ("on_shutdown", device.on_shutdown),
    ):
        if value is None:
            continue
        try:
            codec.parse_desired(value)
        except DeviceValueError as exc:
            problems.append((("devices", name, field), f"{exc} (as a shadow value of '{name}')"))
    return problems


def _follow_cycles(config: GatewayConfig) -> list[Problem]:
    follows = {
        name: device.follow.device
        for name, device in config.devices.items()
        if isinstance(device, OUTPUT_CONFIGS) and device.follow is not None
    }
    for start in follows:
        seen = [start]
        current = follows.get(start)
        while current is not None:
            if current == start:
                chain = " -> ".join([*seen, start])
                return [(("devices", start, "follow"), f"follows form a cycle: {chain}")]
            if current in seen:
                break
            seen.append(current)
            current = follows.get(current)
    return []


def _widest_value(device: object) -> object:
    if isinstance(device, RgbLedConfig):
        return [0.1234, 0.1234, 0.1234]
    if isinstance(device, BinaryOutputConfig | DigitalInputConfig):
        return False
    if isinstance(device, SystemSensorConfig | Mcp3008Config):
        return -123456.123456
    return -0.1234


def _reported_size_estimate(config: GatewayConfig) -> int:
    reported = {name: _widest_value(device) for name, device in config.devices.items()}
    body = json.dumps({"state": {"reported": reported}}, separators=(",", ":"))
    return len(body) + _errors_size(config, MIN_ERROR_REASON_CHARS) + GATEWAY_STATUS_ALLOWANCE_BYTES


def _errors_size(config: GatewayConfig, reason_chars: int) -> int:
    """Bytes of reported.gateway.errors with every device refused (reasons of that length)."""
    errors = {name: "x" * reason_chars for name in config.devices}
    return len(json.dumps({"errors": errors}, separators=(",", ":")))


def error_reason_chars(config: GatewayConfig) -> int:
    """How long each error reason may be so that every device refused at once still fits the
    shadow's limit: ERROR_REASON_CHARS, or less for a config close to the limit."""
    room = SHADOW_DOCUMENT_LIMIT_BYTES - _reported_size_estimate(config)
    per_device = room // max(1, len(config.devices)) + MIN_ERROR_REASON_CHARS
    return max(MIN_ERROR_REASON_CHARS, min(ERROR_REASON_CHARS, per_device))
