"""Credentials and log shipping, wired for the daemon: its named tasks, its admin command and
its status, built from the config (``credentials:`` and ``logging.cloudwatch``).

Tasks (supervised in the gateway's task group): ``aws_credentials`` (fetch and refresh),
``credentials_http`` (the loopback endpoint, with ``credentials.http``) and
``cloudwatch_logs`` (the sender, with ``logging.cloudwatch``). The log handler is attached
when this is built, so the first lines of a run are shipped too, and removed when the sender
ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from gateway.config import GatewayConfig
from gateway.credentials.cloudwatch import CloudWatchShipper, LogBuffer, ShippingHandler
from gateway.credentials.model import AwsCredentials, CredentialsError
from gateway.credentials.provider import CredentialsProvider
from gateway.credentials.serving import TOKEN_FILE, CredentialsServer, load_or_create_token

log = structlog.get_logger()

Task = tuple[str, Coroutine[Any, Any, None]]


class AwsServices:
    """What ``credentials:`` and ``logging.cloudwatch`` ask for (nothing when neither is set)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        version: str,
        pre_chain: list[Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.provider: CredentialsProvider | None = None
        if config.credentials is not None:
            self.provider = CredentialsProvider(
                config.credentials,
                thing=config.shadow_thing,  # credentials need the shadow link (a config check)
                tls_files=(config.shadow_mqtt.cert, config.shadow_mqtt.key),
                mqtt_ca=config.shadow_mqtt.ca,
                state_dir=config.state_dir,
                version=version,
                clock=clock,
            )
        self.server: CredentialsServer | None = None
        self.http_ready = asyncio.Event()
        self.shipper: CloudWatchShipper | None = None
        self.handler: ShippingHandler | None = None
        cloudwatch = config.logging.cloudwatch
        if cloudwatch is not None and self.provider is not None:
            provider = self.provider
            buffer = LogBuffer(cloudwatch.max_buffer_events, cloudwatch.max_buffer_bytes)
            self.shipper = CloudWatchShipper(
                cloudwatch,
                buffer,
                stream=config.shadow_thing,
                credentials=provider.current,
                region=lambda: cloudwatch.region or provider.region,
                clock=clock,
            )
            self.handler = ShippingHandler(buffer, pre_chain)
            logging.getLogger().addHandler(self.handler)

    def tasks(self) -> list[Task]:
        """The named coroutines to supervise."""
        tasks: list[Task] = []
        if self.provider is not None:
            tasks.append(("aws_credentials", self.provider.run()))
            if self.provider.settings.http is not None:
                tasks.append(("credentials_http", self._serve_http()))
        if self.shipper is not None:
            tasks.append(("cloudwatch_logs", self._ship()))
        return tasks

    async def _serve_http(self) -> None:
        """Serve until cancelled; a busy port or an unusable token file is logged and ends
        only this task (as a busy metrics port does)."""
        assert self.provider is not None and self.provider.settings.http is not None
        settings = self.provider.settings.http
        path = settings.token_file or self.config.state_dir / TOKEN_FILE
        host, port = settings.listen
        try:
            token = await asyncio.to_thread(load_or_create_token, path)
            self.server = CredentialsServer(token, self.provider.current)
            await self.server.serve(host, port, self.http_ready)
        except (OSError, CredentialsError) as exc:
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error("credentials_http_failed", host=host, port=port, error=error)

    async def _ship(self) -> None:
        assert self.shipper is not None
        try:
            await self.shipper.run()
        finally:
            if self.handler is not None:
                logging.getLogger().removeHandler(self.handler)

    def credentials(self) -> AwsCredentials:
        """The valid credentials, for the admin socket's ``credentials`` command."""
        if self.provider is None:
            raise CredentialsError("no 'credentials' block in this gateway's config")
        creds = self.provider.current()
        if creds is None:
            error = f": {self.provider.last_error}" if self.provider.last_error else ""
            raise CredentialsError(f"no valid AWS credentials yet{error}")
        return creds

    def admin_credentials(self) -> dict[str, Any]:
        return {"credentials": self.credentials().credential_process()}

    def snapshot(self) -> dict[str, Any]:
        """For ``edge-gateway status``: nothing secret."""
        result: dict[str, Any] = {}
        if self.provider is not None:
            result.update(self.provider.snapshot())
        if self.shipper is not None:
            result.update(self.shipper.snapshot())
        return result
