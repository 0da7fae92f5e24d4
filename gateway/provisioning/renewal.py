"""Certificate health at start and renewal without human help.

``check_credentials`` (blocking) runs before any pin is touched: the key must not be group- or
world-readable, the certificate and key must match, and the certificate must be valid now; each
failure is a ``CertificateError`` naming the file. A pair left half-renewed by a crash (new
certificate, old key or the reverse) is healed from the kept ``*.old`` pair first.

``Renewer.run`` (a task of the gateway's ``TaskGroup``) sleeps until ``certs.renew_before_days``
before expiry, obtains a new pair (``provision.obtain_renewal``), swaps it in atomically keeping
the previous pair as ``*.old``, and has the gateway reconnect with it. Only once the new pair
has connected is the old one deleted; if it does not connect in ``certs.connect_timeout_s``
the old pair is put back and the gateway reconnects with it.

A renewal never loops: when the new certificate still expires within the renewal window (the
cloud issues certificates no longer-lived than ``renew_before_days``), the next attempt waits
``certs.retry_s``, doubling up to ``MAX_RETRY_S``, and ``renewal_window_exceeds_lifetime`` is
logged once; failed renewals back off the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from gateway.config import GatewayConfig
from gateway.core.ports import Clock
from gateway.core.values import JsonValue
from gateway.errors import GatewayError, ProvisioningError
from gateway.provisioning import pairhealth as certs  # the stdlib rules: no cryptography at start
from gateway.provisioning.credstore import (
    CredentialPaths,
    discard_old_pair,
    has_old_pair,
    install_pair,
    key_file_facts,
    paths_of,
    read_pair,
    restore_old_pair,
)

if TYPE_CHECKING:
    from gateway.provisioning.provision import NewCredentials

log = structlog.get_logger()

CERT_EXPIRES_KEY = "cert_expires"  # reported.gateway.cert_expires while within the warning window
MAX_SLEEP_S = 3600.0  # re-read the certificate at least hourly (clock jumps, manual changes)
MAX_RETRY_S = 86_400.0  # the backoff's cap (unless certs.retry_s is longer): a fleet stays calm


def _check(paths: CredentialPaths, now: float, warn_days: float) -> certs.CertificateHealth:
    cert_data, key_data = read_pair(paths)
    mode, dedicated = key_file_facts(paths.key)
    return certs.check_pair(
        cert_data=cert_data,
        key_data=key_data,
        cert_source=str(paths.cert),
        key_source=str(paths.key),
        key_mode=mode,
        dedicated_group=dedicated,
        now=now,
        warn_before_days=warn_days,
    )


def check_credentials(config: GatewayConfig, now: float | None = None) -> certs.CertificateHealth:
    """The start-up certificate health check (blocking); raises ``CertificateError``."""
    paths = paths_of(config)
    now = time.time() if now is None else now
    warn_days = config.certs.warn_before_days
    try:
        return _check(paths, now, warn_days)
    except certs.CertificateError as exc:
        if not (has_old_pair(paths) and "does not belong" in str(exc)):
            raise
        # A renewal was interrupted between the two renames: go back to the previous pair.
        log.warning("certificate_pair_restored", cert=str(paths.cert), reason=str(exc))
        restore_old_pair(paths)
        return _check(paths, now, warn_days)


def expiry_text(expires_at: float) -> str:
    return dt.datetime.fromtimestamp(expires_at, dt.UTC).isoformat(timespec="seconds")


def warn_if_expiring(health: certs.CertificateHealth, cert: str) -> JsonValue:
    """Log the warning and return the ``cert_expires`` value to report (None: not within the
    warning window, which removes the key from the shadow)."""
    if not health.warn:
        return None
    log.warning(
        "certificate_expires_soon",
        cert=cert,
        expires=expiry_text(health.expires_at),
        days_left=round(health.days_left, 2),
    )
    return expiry_text(health.expires_at)


@dataclass
class RenewalHooks:
    """What the renewer needs from the gateway."""

    config: Callable[[], GatewayConfig]  # the running config
    reconnect: Callable[[], Awaitable[bool]]  # reconnect with the files; True once connected
    report: Callable[[str, JsonValue], None]  # set reported.gateway.<key>
    renewed: Callable[[], Awaitable[None]]  # the files changed (refresh digests, expiry)


class Renewer:
    def __init__(
        self,
        hooks: RenewalHooks,
        *,
        clock: Clock = time.time,
        obtain: Callable[[GatewayConfig], Awaitable[NewCredentials]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._hooks = hooks
        self._clock = clock
        self._obtain = obtain
        self._sleep = sleep
        self.renewals = 0
        self.failures = 0
        self.setbacks = 0  # renewals in a row that failed or left the certificate still due
        self._warned = True  # the start-up check may have reported it
        self._window_warned = False  # renewal_window_exceeds_lifetime is logged once

    def retry_delay(self, retry_s: float) -> float:
        """``retry_s`` doubled for each setback in a row, up to ``MAX_RETRY_S`` (or ``retry_s``
        if that is longer); counts this setback."""
        delay = min(retry_s * 2.0 ** min(self.setbacks, 32), max(retry_s, MAX_RETRY_S))
        self.setbacks += 1
        return delay

    def _report_expiry(self, value: JsonValue) -> None:
        if value is None and not self._warned:
            return  # nothing was reported: nothing to clear
        self._warned = value is not None
        self._hooks.report(CERT_EXPIRES_KEY, value)

    async def run(self) -> None:
        """Renew whenever due, forever. A failure, or a renewal that leaves the certificate
        still due, is retried after ``retry_s``, doubling while it keeps happening."""
        while True:
            config = self._hooks.config()
            renew_days = config.certs.renew_before_days
            if renew_days is None or config.provision is None:
                return  # nothing to renew with
            try:
                health = await asyncio.to_thread(check_credentials, config, self._clock())
            except GatewayError as exc:
                log.error("certificate_check_failed", error=str(exc))
                await self._sleep(config.certs.retry_s)
                continue
            self._report_expiry(warn_if_expiring(health, str(config.shadow_mqtt.cert)))
            due = certs.renewal_due_at(health.expires_at, renew_days)
            wait = due - self._clock()
            if wait > 0:
                self.setbacks = 0
                await self._sleep(min(wait, MAX_SLEEP_S))
                continue
            try:
                renewed = await self.renew(config)
            except GatewayError as exc:
                self.failures += 1
                delay = self.retry_delay(config.certs.retry_s)
                log.error("certificate_renewal_failed", error=str(exc), retry_in_s=delay)
                await self._sleep(delay)
                continue
            if certs.renewal_due_at(renewed.expires_at, renew_days) > self._clock():
                self.setbacks = 0
                continue
            # The new certificate is already due again: renewing at once would loop forever.
            delay = self.retry_delay(config.certs.retry_s)
            self._warn_window(renew_days, renewed, delay)
            await self._sleep(delay)

    def _warn_window(
        self, renew_days: float, renewed: certs.CertificateHealth, delay: float
    ) -> None:
        if self._window_warned:
            log.info("certificate_renewal_deferred", retry_in_s=delay)
            return
        self._window_warned = True
        log.warning(
            "renewal_window_exceeds_lifetime",
            renew_before_days=renew_days,
            lifetime_days=round(renewed.lifetime_days, 2),
            days_left=round(renewed.days_left, 2),
            retry_in_s=delay,
            hint="lower certs.renew_before_days below the certificates' lifetime",
        )

    async def renew(self, config: GatewayConfig) -> certs.CertificateHealth:
        """One renewal: obtain, swap in keeping the old pair, reconnect, then drop the old;
        returns the new certificate's health."""
        paths = paths_of(config)
        log.info("certificate_renewal_started", cert=str(paths.cert))
        if self._obtain is None:
            # Imported when first needed: certificate tools and the MQTT claim client.
            from gateway.provisioning.provision import obtain_renewal

            self._obtain = obtain_renewal
        new = await self._obtain(config)
        await asyncio.to_thread(install_pair, paths, new.cert_pem, new.key_pem, keep_old=True)
        if await self._hooks.reconnect():
            await asyncio.to_thread(discard_old_pair, paths)
            await self._hooks.renewed()
            self.renewals += 1
            health = await asyncio.to_thread(check_credentials, config, self._clock())
            self._report_expiry(warn_if_expiring(health, str(paths.cert)))
            expires = expiry_text(health.expires_at)
            log.info("certificate_renewed", cert=str(paths.cert), expires=expires)
            return health
        await asyncio.to_thread(restore_old_pair, paths)
        await self._hooks.renewed()
        await self._hooks.reconnect()
        raise ProvisioningError(
            f"the renewed certificate did not connect within {config.certs.connect_timeout_s:g} s;"
            f" the previous pair is back in {paths.cert}"
        )
