"""The THiNX link's plan for a config (``gateway.cloudlinks``): the link, its MQTT connector
(aiomqtt, logged in as the udid with the API key), its HTTP client (``HttpClient``), the extra
task that checks in (``checkin``), and, once the gateway is built, its firmware handler (the
gateway's update path) and what the status marks look at.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from gateway import __version__
from gateway.config import GatewayConfig
from gateway.config.thinx import ThinxConfig
from gateway.core.ports import DeviceCore, GatewayFacts, LinkPlan, MqttConnector
from gateway.core.tls import client_context
from gateway.links.mqtt import AiomqttConnector, MqttSettings, Will
from gateway.links.thinx.firmware import ThinxFirmware
from gateway.links.thinx.link import ThinxConnector, ThinxLink, ThinxLinkSettings
from gateway.links.thinx.ports import MqttLogin, ThinxHttp
from gateway.links.thinx.protocol import Identity
from gateway.updates.http import HttpClient
from gateway.updates.ota import Updater


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


def thinx_plan(
    config: GatewayConfig,
    core: DeviceCore,
    *,
    make_connector: Callable[[MqttSettings], MqttConnector] = AiomqttConnector,
) -> LinkPlan:
    """The THiNX link of ``config`` (which must have a ``thinx:`` block)."""
    thinx = config.thinx
    assert thinx is not None
    contexts: list[ssl.SSLContext] = []

    def http() -> AbstractAsyncContextManager[ThinxHttp]:
        return _ThinxHttp(thinx, contexts)

    link = ThinxLink(
        thinx_settings(config, thinx),
        engine=core,
        api_key_file=thinx.api_key_file,
        http=http,
    )

    def attach(facts: GatewayFacts) -> None:
        updater = facts.updater
        assert isinstance(updater, Updater)
        link.running_version = lambda: updater.running_version
        link.gateway_errors = facts.gateway_errors
        link.main_link_up = facts.main_link_up
        link.reconnect_now = facts.reconnect_now
        if config.ota is not None:
            link.firmware = ThinxFirmware(updater, product_id=thinx.product_id)

    def connector_for(login: MqttLogin) -> MqttConnector:
        return make_connector(thinx_mqtt_settings(thinx, login))

    return LinkPlan(
        name="thinx",
        link=link,
        connector=ThinxConnector(link, connector_for),
        tasks={"checkin": link.run_checkins},
        attach=attach,
    )


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
