"""The THiNX link's parts for a config: the link, its MQTT connector (aiomqtt, logged in as the
udid with the API key), its HTTP client (``HttpClient``) and firmware handler (the gateway's
update path), and the extra task that checks in (``thinx_checkin``).

Composition only: the link package knows none of these modules (see ``gateway.links.thinx``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from gateway import __version__
from gateway.config import GatewayConfig
from gateway.config.thinx import ThinxConfig
from gateway.core.ports import DeviceCore, MqttConnector
from gateway.core.tls import client_context
from gateway.links.mqtt import AiomqttConnector, MqttSettings, Will
from gateway.links.thinx.link import ThinxConnector, ThinxLink, ThinxLinkSettings
from gateway.links.thinx.ports import MqttLogin, ThinxHttp
from gateway.links.thinx.protocol import Identity
from gateway.updates.http import HttpClient
from gateway.updates.ota import Updater
from gateway.updates.thinx_ota import ThinxFirmware


@dataclass
class ThinxParts:
    link: ThinxLink
    connector: ThinxConnector
    tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)


def thinx_settings(config: GatewayConfig, thinx: ThinxConfig) -> ThinxLinkSettings:
    identity = Identity(
        mac=(thinx.mac or "").upper(),  # empty: the primary interface's, found at start
        firmware=f"edge-gateway-{__version__}",
        version=__version__,
        commit=None,
        owner=thinx.owner,
        alias=thinx.alias,
        platform="",  # found at start (the Pi's model)
    )
    return ThinxLinkSettings(
        url=thinx.url,
        owner=thinx.owner,
        identity=identity,
        checkin_interval_s=thinx.checkin_interval_s,
        retry_min_s=thinx.retry.min_s,
        retry_max_s=thinx.retry.max_s,
        status_template=thinx.status,
        retain_status=thinx.mqtt.retain_status,
        on_configuration=tuple(thinx.on_configuration) if thinx.on_configuration else None,
        on_configuration_timeout_s=thinx.on_configuration_timeout_s,
        state_dir=config.state_dir / "thinx",
    )


def thinx_mqtt_settings(thinx: ThinxConfig, login: MqttLogin) -> MqttSettings:
    mqtt = thinx.mqtt
    return MqttSettings(
        host=mqtt.host,
        port=mqtt.port,
        client_id=login.client_id,
        ca=mqtt.ca,
        cert=None,
        key=None,
        keepalive_s=mqtt.keepalive_s,
        connect_timeout_s=mqtt.connect_timeout_s,
        # Retained like the status messages, so a retained "connected" never outlives us.
        will=Will(login.will_topic, login.will_payload, retain=mqtt.retain_status),
        username=login.username,
        password=login.password,
        tls=not mqtt.allow_plaintext,
    )


def thinx_parts(
    config: GatewayConfig,
    *,
    engine: DeviceCore,
    updater: Updater,
    gateway_errors: Callable[[], bool],
    main_link_up: Callable[[], bool],
    make_connector: Callable[[MqttSettings], MqttConnector] = AiomqttConnector,
) -> ThinxParts:
    """The THiNX link of ``config`` (which must have a ``thinx:`` block)."""
    thinx = config.thinx
    assert thinx is not None
    contexts: list[ssl.SSLContext] = []

    def http() -> AbstractAsyncContextManager[ThinxHttp]:
        return _ThinxHttp(thinx, contexts)

    link = ThinxLink(
        thinx_settings(config, thinx),
        engine=engine,
        api_key_file=thinx.api_key_file,
        running_version=lambda: updater.running_version,
        http=http,
        firmware=ThinxFirmware(updater, product_id=thinx.product_id) if config.ota else None,
        gateway_errors=gateway_errors,
        main_link_up=main_link_up,
    )
    connector = ThinxConnector(
        link, lambda login: make_connector(thinx_mqtt_settings(thinx, login))
    )
    return ThinxParts(link, connector, {"thinx_checkin": link.run_checkins})


class _ThinxHttp:
    """An ``HttpClient`` for the THiNX API (its TLS context built off the loop, once)."""

    def __init__(self, thinx: ThinxConfig, contexts: list[ssl.SSLContext]) -> None:
        self._thinx = thinx
        self._contexts = contexts
        self._client: HttpClient | None = None

    async def __aenter__(self) -> ThinxHttp:
        if not self._contexts:
            self._contexts.append(await asyncio.to_thread(client_context, self._thinx.ca))
        self._client = HttpClient(
            ssl_context=self._contexts[0],
            timeout_s=self._thinx.timeout_s,
            user_agent="THiNX-Client",  # THiNXLib's; the server does not look at it
        )
        return await self._client.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        await self._client.__aexit__(None, None, None)
