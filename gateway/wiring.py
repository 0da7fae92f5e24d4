"""From a config to the settings each part is built (and reconfigured on reload) with.

Pure translation, no I/O but the one file digest: the device core's codecs, behaviours and
minimum intervals, the shadow link's options, the MQTT settings, the backoff, the outbox, and
the values outputs are left in at a clean stop.
"""

from __future__ import annotations

from typing import Any

from gateway.config import (
    OUTPUT_CONFIGS,
    BinaryOutputConfig,
    GatewayConfig,
    ReconnectConfig,
    error_reason_chars,
    is_output,
)
from gateway.core.backoff import Backoff
from gateway.core.outbox import Outbox
from gateway.core.rules import Behaviours, Follow, FollowRules, Interlocks
from gateway.core.values import NativeValue, ValueCodec, codec_for, initial_value
from gateway.links.mqtt import MqttSettings, Will
from gateway.links.shadow.settings import ShadowLinkSettings
from gateway.ops.reload import files_digest, tls_files
from gateway.provisioning.pairhealth import certificate_expiry


def mqtt_settings(config: GatewayConfig) -> MqttSettings:
    mqtt = config.shadow_mqtt
    return MqttSettings(
        host=mqtt.host,
        port=mqtt.port,
        client_id=config.shadow_thing,
        ca=mqtt.ca,
        cert=mqtt.cert,
        key=mqtt.key,
        username=mqtt.username,
        password_file=mqtt.password_file,
        keepalive_s=mqtt.keepalive_s,
        connect_timeout_s=mqtt.connect_timeout_s,
        # The broker says "offline" (retained) for us when the link dies without a goodbye.
        will=Will(config.status_topic, b"offline", retain=True),
    )


def behaviours_for(config: GatewayConfig) -> Behaviours:
    """Interlocks, follows, pulses and fail-safe values from the config, in device terms."""
    follows = []
    pulses: dict[str, float] = {}
    failsafe: dict[str, tuple[float, object]] = {}
    for name, device in config.devices.items():
        if not isinstance(device, OUTPUT_CONFIGS):
            continue
        if device.follow is not None:
            follows.append(Follow(name, device.follow.device, device.follow.mode))
        if isinstance(device, BinaryOutputConfig) and device.pulse_ms is not None:
            pulses[name] = device.pulse_ms / 1000
        if device.on_disconnect is not None:
            value = codec_for(device).parse_desired(device.on_disconnect.value)
            failsafe[name] = (device.on_disconnect.after_s, value)
    return Behaviours(
        interlocks=Interlocks.of(config.interlock_groups),
        follows=FollowRules(tuple(follows)),
        pulses_s=pulses,
        failsafe=failsafe,
    )


def codecs_for(config: GatewayConfig) -> dict[str, ValueCodec]:
    return {name: codec_for(device) for name, device in config.devices.items()}


def min_intervals_for(config: GatewayConfig) -> dict[str, float]:
    return {
        name: getattr(device, "min_interval_ms", 0) / 1000
        for name, device in config.devices.items()
        if getattr(device, "min_interval_ms", 0)
    }


def engine_options(config: GatewayConfig) -> dict[str, Any]:
    """The device core's settings from a config (for building it and for reloads)."""
    return {
        "codecs": codecs_for(config),
        "behaviours": behaviours_for(config),
        "min_intervals_s": min_intervals_for(config),
    }


def shadow_options(config: GatewayConfig) -> ShadowLinkSettings:
    """The shadow link's settings from a config (for building it and for reloads)."""
    return ShadowLinkSettings(
        thing=config.shadow_thing,
        shadow=config.shadow,
        codecs=codecs_for(config),
        restore=frozenset(
            name
            for name, device in config.devices.items()
            if is_output(device) and getattr(device, "restore", False)
        ),
        event_devices=frozenset(n for n, d in config.devices.items() if d.events),
        events_topic=config.event_topic,
        status_topic=config.status_topic,
        error_reason_chars=error_reason_chars(config),
    )


def shutdown_values(config: GatewayConfig) -> dict[str, NativeValue]:
    """What each output is driven to at a clean stop: on_shutdown, else its initial value."""
    values: dict[str, NativeValue] = {}
    for name, device in config.devices.items():
        if not isinstance(device, OUTPUT_CONFIGS):
            continue
        if device.on_shutdown is not None:
            values[name] = codec_for(device).parse_desired(device.on_shutdown)
        elif (initial := initial_value(device)) is not None:
            values[name] = initial
    return values


def backoff_for(config: GatewayConfig) -> Backoff:
    policy = config.mqtt.reconnect if config.mqtt is not None else ReconnectConfig()
    return Backoff(policy.min_s, policy.max_s, policy.reset_after_s)


def outbox_for(config: GatewayConfig) -> Outbox:
    settings = config.outbox
    return Outbox(
        config.state_dir / "outbox.sqlite3",
        max_events=settings.max_events,
        max_bytes=settings.max_bytes,
        sync=settings.sync,
    )


def tls_facts(config: GatewayConfig) -> tuple[str, float | None]:
    """A digest of the TLS files and the client certificate's expiry (blocking)."""
    mqtt = config.mqtt
    if mqtt is None:
        return "", None
    cert = mqtt.cert
    return files_digest(tls_files(config)), None if cert is None else certificate_expiry(cert)
