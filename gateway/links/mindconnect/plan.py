"""The MindConnect link's ``LinkPlan`` from the config: the link, the connector of its own
connection loop, and its task (the outbox writer, which first queues the values at start).

The connector reads the agent certificate's CN when the gateway prepares its connectors (off
the event loop), so the client id ``<tenant>_<CN>`` and the topics are known before the first
connection; then it is an ``AiomqttConnector`` with the contract's options: ``clean_session``
false, keepalive 60 s, TLS 1.2+, the chain presented after the certificate when one is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import structlog

from gateway.config import GatewayConfig
from gateway.config.mindconnect import MindConnectConfig
from gateway.core.outbox import Outbox
from gateway.core.ports import DeviceCore, LinkPlan, MqttSession
from gateway.core.values import codec_for
from gateway.errors import ConfigError
from gateway.links.mindconnect.identity import client_id, read_common_name
from gateway.links.mindconnect.link import MindConnectLink, MindConnectSettings
from gateway.links.mqtt import AiomqttConnector, MqttSettings

log = structlog.get_logger()

KEEPALIVE_S = 60  # Siemens' onboarding contract
OUTBOX_FILE = "mindconnect-outbox.sqlite3"
CERT_FILE = "mindconnect-cert.pem"
KEY_FILE = "mindconnect-privkey.pem"


def default_credentials(state_dir: Path) -> tuple[Path, Path]:
    """Where ``edge-gateway mindconnect agent-cert`` installs the agent's pair."""
    return state_dir / "certs" / CERT_FILE, state_dir / "certs" / KEY_FILE


def agent_files(config: GatewayConfig, block: MindConnectConfig) -> tuple[Path, Path]:
    cert, key = default_credentials(config.state_dir)
    return block.cert or cert, block.key or key


class MindConnectConnector:
    """An ``MqttConnector`` whose client id comes from the agent certificate."""

    def __init__(self, settings: MqttSettings, tenant: str, link: MindConnectLink) -> None:
        self._settings = settings  # client_id filled in by prepare()
        self._tenant = tenant
        self._link = link
        self._inner: AiomqttConnector | None = None

    async def prepare(self) -> None:
        if self._inner is not None:
            return
        cert = self._settings.cert
        if cert is None:  # the config always gives one (an agent logs in by certificate)
            raise ConfigError(["mindconnect.cert: an agent certificate is required"])
        common_name = await asyncio.to_thread(read_common_name, cert)
        ident = client_id(self._tenant, common_name)
        inner = AiomqttConnector(replace(self._settings, client_id=ident))
        await inner.prepare()  # a bad pair fails here, before any pin is touched
        self._link.set_client_id(ident)
        self._inner = inner
        log.info("mindconnect_agent", client_id=ident, host=self._settings.host)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MqttSession]:
        await self.prepare()
        assert self._inner is not None
        async with self._inner.connect() as session:
            yield session


def link_settings(config: GatewayConfig, block: MindConnectConfig) -> MindConnectSettings:
    return MindConnectSettings(
        tenant=block.tenant,
        codecs={name: codec_for(device) for name, device in config.devices.items()},
        datapoints={name: device.datapoint or name for name, device in config.devices.items()},
        event_devices=frozenset(n for n, d in config.devices.items() if d.events),
        publish_interval_s=block.publish_interval_ms / 1000,
    )


def mindconnect_plans(config: GatewayConfig, core: DeviceCore) -> list[LinkPlan]:
    """The MindConnect link's plan when ``mindconnect:`` is configured (else none)."""
    block = config.mindconnect
    if block is None:
        return []
    cert, key = agent_files(config, block)
    outbox = Outbox(
        config.state_dir / OUTBOX_FILE,
        max_events=config.outbox.max_events,
        max_bytes=config.outbox.max_bytes,
        sync=config.outbox.sync,
    )
    link = MindConnectLink(link_settings(config, block), core=core, outbox=outbox)
    settings = MqttSettings(
        host=block.host,
        port=block.port,
        client_id="",
        ca=block.ca,
        cert=cert,
        key=key,
        keepalive_s=KEEPALIVE_S,
        connect_timeout_s=block.connect_timeout_s,
        clean_session=False,
        chain=block.chain,
    )
    return [
        LinkPlan(
            name="mindconnect",
            link=link,
            connector=MindConnectConnector(settings, block.tenant, link),
            tasks={"outbox": partial(link.run_outbox, first_values=True)},
        )
    ]
