"""Fetching temporary AWS credentials and keeping them fresh.

Two sources, each as its platform documents it (field names in ``model``):

- ``getcreds``: Ioto's ``POST .../provision/getCreds`` with an empty body, as Ioto's agent
  sends it, authenticated as check-in is (a bearer token from ``token_file``, optionally the
  thing's certificate);
- ``role_alias``: AWS IoT's ``GET https://<endpoint>/role-aliases/<alias>/credentials`` over
  mutual TLS with the thing's certificate, naming the thing in ``x-amzn-iot-thingname``.

``CredentialsProvider.run`` loads the stored copy, then fetches new credentials
``refresh_before_s`` (20 minutes, as Ioto does) before the current ones expire, or at half their
lifetime when they live less than twice that; a failure backs off with full jitter and tries
again, and ``current()`` never returns credentials that have expired. The clock and the sleep
are injectable so tests can drive time. Secrets are never logged: only the key id's first four
characters, the expiry and the region.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from gateway.config.credentials import GetCredsConfig, RoleAliasConfig
from gateway.core.backoff import Backoff
from gateway.core.tls import client_context
from gateway.credentials import store
from gateway.credentials.model import (
    AwsCredentials,
    CredentialsError,
    from_getcreds,
    from_role_alias,
)
from gateway.errors import TlsSetupError, UpdateError
from gateway.updates.http import HttpClient, HttpReply

log = structlog.get_logger()

MAX_ANSWER_BYTES = 16 * 1024  # an answer is about 2 KB
# Credentials are handed out only while they stay valid this much longer: a program that gets
# them must have time to use them.
SERVE_MARGIN_S = 30.0
MAX_ERROR_CHARS = 200

SourceConfig = GetCredsConfig | RoleAliasConfig


class CredentialsAuthError(CredentialsError):
    """The source refused us (401/403): the token, the certificate or its policy."""


class CredentialsProvider:
    """The current credentials of one source, refreshed before they expire."""

    def __init__(
        self,
        settings: SourceConfig,
        *,
        thing: str,
        tls_files: tuple[Path | None, Path | None],
        mqtt_ca: Path,
        state_dir: Path,
        version: str = "",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.settings = settings
        self.thing = thing
        self.tls_files = tls_files  # mqtt.cert and mqtt.key
        self.mqtt_ca = mqtt_ca
        self.path = store.credentials_path(state_dir)
        self.version = version
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._current: AwsCredentials | None = None
        self._margin_s = settings.refresh_before_s
        self.fetches = 0  # successful fetches since start
        self.failures = 0  # failed fetches since start
        self.last_error: str | None = None

    # -- what the rest of the gateway asks ------------------------------------------------

    def current(self, margin_s: float = SERVE_MARGIN_S) -> AwsCredentials | None:
        """The credentials, while valid for ``margin_s`` more; None otherwise (never expired
        ones)."""
        creds = self._current
        if creds is None or not creds.valid_at(self._clock(), margin_s):
            return None
        return creds

    @property
    def region(self) -> str | None:
        """The region to sign for: the config's, else the answer's, else the endpoint's."""
        settings = self.settings
        if settings.region:
            return settings.region
        if self._current is not None and self._current.region:
            return self._current.region
        if isinstance(settings, RoleAliasConfig):
            return settings.endpoint_region
        return None

    def refresh_in(self) -> float:
        """Seconds until the next fetch is due (0: now)."""
        creds = self._current
        if creds is None:
            return 0.0
        return max(0.0, creds.expiration - self._margin_s - self._clock())

    def snapshot(self) -> dict[str, Any]:
        """For ``edge-gateway status``: no secret, only what and until when."""
        creds = self.current(0.0)
        return {
            "credentials": {
                "source": self.settings.source,
                "valid": creds is not None,
                "expires": creds.expiration_iso if creds else None,
                "region": self.region,
                "fetches": self.fetches,
                "failures": self.failures,
                "error": self.last_error,
            }
        }

    # -- the refresh loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Load the stored copy, then keep the credentials fresh until cancelled."""
        await self._load_stored()
        settings = self.settings
        backoff = Backoff(settings.retry.min_s, settings.retry.max_s, float("inf"), self._rng)
        while True:
            delay = self.refresh_in()
            if delay > 0:
                await self._sleep(delay)
            try:
                creds = await self.fetch()
            except Exception as exc:  # nothing a server sends may end the task
                self.failures += 1
                expected = isinstance(exc, CredentialsError)
                error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
                self.last_error = error[:MAX_ERROR_CHARS]
                auth = isinstance(exc, CredentialsAuthError)
                wait = backoff.at_cap() if auth else backoff.next_delay()
                valid = self.current(0.0)
                log.warning(
                    "credentials_auth_failed" if auth else "credentials_fetch_failed",
                    source=settings.source,
                    error=self.last_error,
                    retry_in_s=round(wait, 1),
                    expires_in_s=round(valid.expiration - self._clock()) if valid else None,
                )
                await self._sleep(wait)
                continue
            backoff.reset()
            self.accept(creds)
            try:
                await asyncio.to_thread(store.save, self.path, creds)
            except CredentialsError as exc:  # kept in memory; the next restart fetches anew
                log.error("credentials_store_failed", error=str(exc))

    def accept(self, creds: AwsCredentials, *, fetched: bool = True) -> None:
        """Make ``creds`` the current credentials."""
        now = self._clock()
        lifetime = creds.expiration - now
        # Short-lived credentials (AWS allows 15 minutes) are renewed at half their lifetime.
        refresh = self.settings.refresh_before_s
        self._margin_s = min(refresh, lifetime / 2) if fetched else refresh
        self._current = creds
        self.last_error = None
        if fetched:
            self.fetches += 1
        log.info(
            "credentials_refreshed" if fetched else "credentials_loaded",
            source=self.settings.source,
            key_id=creds.access_key_id[:4] + "…",
            expires=creds.expiration_iso,
            region=creds.region or self.region,
            refresh_in_s=round(self.refresh_in()),
        )

    async def _load_stored(self) -> None:
        try:
            stored = await asyncio.to_thread(store.load, self.path)
        except CredentialsError as exc:
            log.warning("credentials_store_unreadable", error=str(exc))
            return
        if stored is not None and stored.valid_at(self._clock(), SERVE_MARGIN_S):
            self.accept(stored, fetched=False)

    # -- one fetch -------------------------------------------------------------------------------

    async def fetch(self) -> AwsCredentials:
        """New credentials from the source; CredentialsError on any failure."""
        settings = self.settings
        context, token = await asyncio.to_thread(self._tls_and_token)
        if isinstance(settings, GetCredsConfig):
            url = settings.url
            method, headers = "POST", {"Content-Type": "application/json"}
        else:
            url = (
                f"https://{settings.endpoint}/role-aliases/{quote(settings.role_alias)}/credentials"
            )
            method, headers = "GET", {"x-amzn-iot-thingname": self.thing}
        client = HttpClient(
            ssl_context=context,
            timeout_s=settings.timeout_s,
            token=token,
            token_origin=url if token else None,
            user_agent=f"edge-gateway/{self.version}" if self.version else "edge-gateway",
        )
        try:
            async with client as http:
                reply = await http.request(
                    method,
                    url,
                    headers=headers,
                    data=b"" if method == "POST" else None,
                    max_bytes=MAX_ANSWER_BYTES,
                    raise_for_status=False,
                )
        except UpdateError as exc:  # the HTTP client's errors: transport, redirect, size
            raise CredentialsError(str(exc)) from exc
        creds = self._parse(reply)
        if not creds.valid_at(self._clock(), SERVE_MARGIN_S):
            # Taking them would mean fetching again at once, forever: back off instead.
            raise CredentialsError(
                f"{settings.source} handed out credentials expiring at {creds.expiration_iso}, "
                "which is not in the future here (is the clock right?)"
            )
        return creds

    def _parse(self, reply: HttpReply) -> AwsCredentials:
        source = self.settings.source
        if reply.status in (401, 403):
            raise CredentialsAuthError(
                f"{source} refused the request ({reply.status}): check "
                + ("the token file" if source == "getcreds" else "the certificate's policy")
            )
        if not 200 <= reply.status < 300:
            raise CredentialsError(f"{source} answered {reply.status}")
        try:
            answer = reply.json(what=f"the {source} answer")
        except UpdateError as exc:
            raise CredentialsError(str(exc)) from exc
        if isinstance(self.settings, GetCredsConfig):
            return from_getcreds(answer)
        return from_role_alias(answer, self.region)

    def _tls_and_token(self) -> tuple[ssl.SSLContext, str | None]:
        """The TLS context and the bearer token, read anew for each fetch (a renewed
        certificate or a replaced token file is picked up) (blocking)."""
        settings = self.settings
        cert, key = self.tls_files
        try:
            if isinstance(settings, GetCredsConfig):
                mutual = (cert, key) if settings.client_cert else (None, None)
                context = client_context(settings.ca, *mutual)
            else:
                context = client_context(settings.ca or self.mqtt_ca, cert, key)
        except TlsSetupError as exc:
            raise CredentialsError(f"cannot set up TLS for {settings.source}: {exc}") from exc
        if not isinstance(settings, GetCredsConfig) or settings.token_file is None:
            return context, None
        try:
            token = settings.token_file.read_text().strip()
        except OSError as exc:
            raise CredentialsError(
                f"cannot read credentials.token_file: {exc.strerror or exc}"
            ) from exc
        return context, token or None
