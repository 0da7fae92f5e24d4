"""The check-in client: ``POST checkin.url`` at start and every ``checkin.interval_s`` ±10 %,
backing off after any failure (auth failures at the cap; nothing a server answers ends the
loop), and the bookkeeping ``edge-gateway status`` and the metrics show. What to do with an
answer (an offer or none) is the caller's: ``on_answer`` says when to come back at the latest.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway.config import CheckinConfig
from gateway.config.provisioned import DeviceIdentity, read_identity
from gateway.core.backoff import Backoff
from gateway.core.tls import client_context
from gateway.errors import ConfigError, TlsSetupError, UpdateError
from gateway.updates.checkin import Offer, OfferError, checkin_body, next_checkin_s, parse_offer
from gateway.updates.http import HttpClient, HttpStatusError
from gateway.updates.ota_record import MAX_ERROR_CHARS

log = structlog.get_logger()

# (the HTTP client of this check-in, its offer or None) -> seconds until the next at the latest
AnswerHandler = Callable[[HttpClient, Offer | None], Awaitable[float]]


class CheckinClient:
    """Check-ins of thing ``thing``, reporting ``running_version()``; answers go to
    ``on_answer``. The body's ``id`` is the Provision API's device id when getCerts gave one
    (``state_dir/provision.json``, read when the task starts), else the thing name."""

    def __init__(
        self,
        settings: CheckinConfig,
        *,
        thing: str,
        tls_files: tuple[Path | None, Path | None],
        version: str,
        running_version: Callable[[], str],
        on_answer: AnswerHandler,
        rng: Callable[[float, float], float] = random.uniform,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.thing = thing
        self.state_dir = state_dir  # where provisioning keeps the device identity
        self.identity = DeviceIdentity(thing)  # until provision.json is read
        self.tls_files = tls_files  # mqtt.cert and mqtt.key, presented with client_cert: true
        self.version = version  # of the gateway, in the User-Agent
        self.last_checkin: str | None = None  # ISO time of the last answered check-in
        self.last_checkin_at: float | None = None  # the same, as epoch seconds
        self.last_checkin_error: str | None = None
        self.checkin_failures = 0  # failed check-ins (any cause) since start
        self._running_version = running_version
        self._on_answer = on_answer
        self._rng = rng

    async def run(self) -> None:
        """Check in now and then every interval (±10 %); failures back off. Runs until cancelled."""
        settings = self.settings
        backoff = Backoff(settings.retry.min_s, settings.retry.max_s, float("inf"), self._rng)
        while True:  # TLS files or the token may be fixed (or renewed) while we wait
            try:
                context, token, self.identity = await asyncio.to_thread(self._credentials)
                break
            except UpdateError as exc:
                delay = backoff.at_cap()
                log.error("checkin_setup_failed", error=str(exc), retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
        backoff.attempt = 0
        client = HttpClient(
            ssl_context=context,
            timeout_s=settings.timeout_s,
            token=token,
            token_origin=settings.url,
            user_agent=f"edge-gateway/{self.version}",
        )
        async with client as http:
            while True:
                try:
                    delay = await self.check_once(http)
                    backoff.attempt = 0
                except HttpStatusError as exc:
                    self.last_checkin_error = str(exc)
                    if exc.is_auth:
                        delay = backoff.at_cap()
                        log.error(
                            "checkin_auth_failed",
                            status=exc.status,
                            hint="check checkin.token_file / the client certificate",
                            retry_in_s=round(delay, 1),
                        )
                    else:
                        delay = backoff.next_delay()
                        log.warning("checkin_failed", error=str(exc), retry_in_s=round(delay, 1))
                except UpdateError as exc:
                    self.last_checkin_error = str(exc)
                    delay = backoff.next_delay()
                    log.warning("checkin_failed", error=str(exc), retry_in_s=round(delay, 1))
                except Exception as exc:  # nothing a server sends may end the task
                    self.last_checkin_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                    delay = backoff.next_delay()
                    log.error(
                        "checkin_failed_unexpectedly",
                        error_type=type(exc).__name__,
                        error=self.last_checkin_error,
                        retry_in_s=round(delay, 1),
                    )
                if self.last_checkin_error is not None:
                    self.checkin_failures += 1
                await asyncio.sleep(delay)

    def _credentials(self) -> tuple[ssl.SSLContext, str | None, DeviceIdentity]:
        """The TLS context (with the client certificate if configured), the token and the
        device identity (blocking)."""
        settings = self.settings
        cert, key = self.tls_files if settings.client_cert else (None, None)
        try:
            context = client_context(settings.ca, cert, key)
        except TlsSetupError as exc:
            raise UpdateError(f"cannot set up TLS for check-in: {exc}") from exc
        try:
            stored = None if self.state_dir is None else read_identity(self.state_dir)
        except ConfigError as exc:
            raise UpdateError("; ".join(exc.problems)) from exc
        identity = stored or DeviceIdentity(self.thing)
        if settings.token_file is None:
            return context, None, identity
        try:
            return context, settings.token_file.read_text().strip() or None, identity
        except OSError as exc:
            raise UpdateError(f"cannot read checkin.token_file: {exc.strerror or exc}") from exc

    async def check_once(self, http: HttpClient) -> float:
        """One check-in and whatever it offers; returns the seconds until the next one."""
        settings = self.settings
        body = checkin_body(
            thing=self.identity.id,
            product_id=settings.product_id,
            test=settings.test,
            version=self._running_version(),
            extra=settings.extra,
        )
        reply = await http.post_json(settings.url, body)
        now = datetime.now(UTC)
        self.last_checkin = now.isoformat(timespec="seconds")
        self.last_checkin_at = now.timestamp()  # for the metrics endpoint
        self.last_checkin_error = None
        interval = next_checkin_s(settings.interval_s, self._rng)
        try:
            offer = parse_offer(reply.body, self._running_version())
        except OfferError as exc:
            raise UpdateError(f"check-in answer: {exc}") from exc
        return min(interval, await self._on_answer(http, offer))
