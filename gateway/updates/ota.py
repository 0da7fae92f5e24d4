"""Check-in and over-the-air updates: verified, signed, atomic, with automatic rollback.

``Updater`` coordinates the parts, each in its own module:

- ``ota_checkin.CheckinClient``: the ``update_checker`` task; checks in at start and every
  ``checkin.interval_s`` ±10 %, backs off after any failure (nothing a server answers ends it);
- ``ota_download.ArtifactDownloader``: the signed manifest (with ``ota.public_key``), the
  download (resumable, capped, free disk checked as it streams) and its verification;
- ``ota_apply.CommandApplier`` / ``WheelApplier``: ``command`` mode, or ``wheel`` mode (a
  hash-pinned bundle into a new A/B slot, the ``current`` link switched, exit 75 so systemd
  restarts into it; the links are ``ota_slots``);
- ``ota_health.HealthWatch``: the ``ota_health`` task of the restarted gateway; connected and
  synced within ``ota.health_timeout_s`` commits the slot, otherwise the previous slot comes
  back (``run_guard`` counts starts before each one);
- ``ota_record.UpdateRecord``: state.json and the status reported as ``reported.gateway.ota``.

Here: what an offer leads to (skip, wait for the window, one update at a time, whichever
source offered it: THiNX's firmware path holds the same lock through ``exclusive``). The pure
decisions live in ``checkin.py`` and ``otastate.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from datetime import time as clock_time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import __version__
from gateway.config import GatewayConfig
from gateway.config.formats import Window
from gateway.errors import UpdateError
from gateway.updates.checkin import Offer, should_apply
from gateway.updates.ota_record import UpdateRecord
from gateway.updates.otastate import OtaState

if TYPE_CHECKING:
    from gateway.updates.http import HttpClient
    from gateway.updates.ota_apply import Applier
    from gateway.updates.ota_checkin import CheckinClient
    from gateway.updates.ota_download import ArtifactDownloader
    from gateway.updates.ota_health import HealthWatch

__all__ = ["Updater"]

log = structlog.get_logger()


class Updater:
    """Check-ins and updates of one gateway; ``status`` is what ``reported.gateway.ota`` says."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        report: Callable[[dict[str, Any]], None] = lambda status: None,
        healthy: Callable[[], bool] = lambda: False,
        restart: Callable[[], None] = lambda: None,
        version: str = __version__,
        rng: Callable[[float, float], float] = random.uniform,
        local_time: Callable[[], clock_time] = lambda: datetime.now().time(),
        free_space: Callable[[Path], int] | None = None,
    ) -> None:
        self.ota = config.ota
        self.version = version
        self.record = UpdateRecord(config.state_dir / "ota", report)
        self.directory = self.record.directory
        self.checkins: CheckinClient | None = None
        self.downloader: ArtifactDownloader | None = None
        self.applier: Applier | None = None
        self.health: HealthWatch | None = None
        # Each part is imported only when configured: a gateway without check-in or OTA does
        # not carry the HTTP client, the downloader, the signature checks and the appliers.
        if config.checkin is not None:
            from gateway.updates.ota_checkin import CheckinClient

            self.checkins = CheckinClient(
                config.checkin,
                thing=config.shadow_thing,  # check-in needs the shadow link (a config check)
                tls_files=(config.shadow_mqtt.cert, config.shadow_mqtt.key),
                version=version,
                running_version=lambda: self.running_version,
                on_answer=self._on_answer,
                rng=rng,
                state_dir=config.state_dir,
            )
        ota = self.ota
        if ota is not None:
            from gateway.updates.ota_apply import CommandApplier, WheelApplier
            from gateway.updates.ota_download import ArtifactDownloader
            from gateway.updates.ota_health import HealthWatch

            if config.checkin is not None:  # offers come with check-ins only
                self.downloader = ArtifactDownloader(
                    ota,
                    product_id=config.checkin.product_id,
                    record=self.record,
                    free_space=free_space,
                )
            if ota.mode == "command":
                self.applier = CommandApplier(ota, self.record)
            else:
                self.applier = WheelApplier(ota, self.record, restart)
            self.health = HealthWatch(
                ota, self.record, version=version, healthy=healthy, restart=restart
            )
        self._local_time = local_time
        self._lock = asyncio.Lock()  # never two updates at once
        self._window = Window.parse(ota.window) if ota and ota.window else None

    @property
    def state(self) -> OtaState:
        return self.record.state

    @property
    def status(self) -> dict[str, Any]:
        return self.record.status

    async def load(self) -> None:
        """Read state.json; the last outcome (e.g. a rollback before the restart) is reported."""
        await self.record.load()
        if self.ota is not None and self.ota.public_key is None:
            log.warning(
                "ota_unsigned",
                hint="without ota.public_key only the check-in answer's checksum vouches for "
                "an update; set it to require signed manifests",
            )

    @property
    def baseline_version(self) -> str | None:
        """What an offer must be newer than: the gateway's version in ``wheel`` mode, the last
        applied one in ``command`` mode (None before the first: the attached device's version
        is not known to the gateway)."""
        if self.ota is not None and self.ota.mode == "command":
            return self.state.installed.version if self.state.installed else None
        return self.version

    @property
    def running_version(self) -> str:
        """What the check-in says runs: the gateway, or in command mode the last applied one."""
        if self.ota is not None and self.ota.mode == "command" and self.state.installed:
            return self.state.installed.version
        return self.version

    # -- check-in ---------------------------------------------------------------------------

    async def run_checkins(self) -> None:
        """Check in now and then every interval (±10 %); failures back off. Runs until cancelled."""
        if self.checkins is not None:
            await self.checkins.run()

    async def check_once(self, http: HttpClient) -> float:
        """One check-in and whatever it offers; returns the seconds until the next one."""
        assert self.checkins is not None
        return await self.checkins.check_once(http)

    async def _on_answer(self, http: HttpClient, offer: Offer | None) -> float:
        """What a check-in's answer leads to; the seconds until the next check-in at the latest
        (infinite: the regular interval)."""
        if offer is None:
            log.info("checkin_up_to_date", version=self.running_version)
            await self._forget_artifacts()  # an offer withdrawn: its (part) download goes too
            return float("inf")
        skip = should_apply(
            offer, running_version=self.running_version, rolled_back=self.state.rolled_back
        )
        if skip is not None:
            log.info("ota_offer_skipped", version=offer.version, reason=skip)
            await self._forget_artifacts()
            return float("inf")
        log.info("ota_offered", version=offer.version, running=self.running_version)
        if self.ota is None:
            log.warning("ota_not_configured", version=offer.version)
            return float("inf")
        return await self.update(http, offer)

    async def _forget_artifacts(self) -> None:
        if self.ota is not None and not self._lock.locked():
            from gateway.updates.ota_download import remove_other_artifacts

            await asyncio.to_thread(remove_other_artifacts, self.directory, keep=None)

    # -- one update ---------------------------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, *, source: str, version: str) -> AsyncIterator[None]:
        """Hold the one-update-at-a-time lock: an update from another source (the Provision
        API's check-in, THiNX) waits until this one is done, downloads included (they share
        the state record and the applier)."""
        if self._lock.locked():
            log.info("ota_waiting_for_other_update", source=source, version=version)
        async with self._lock:
            yield

    async def update(self, http: HttpClient, offer: Offer) -> float:
        """Download, verify and (inside the window) apply ``offer``; returns when to come back.

        Raises UpdateError for a retryable failure (a cut download resumes next time)."""
        from gateway.updates.ota_download import ArtifactRejected

        async with self.exclusive(source="provision", version=offer.version):
            assert self.ota is not None and self.downloader is not None
            assert self.applier is not None
            skip = should_apply(
                offer, running_version=self.running_version, rolled_back=self.state.rolled_back
            )
            if skip is not None:  # another update finished while this one waited
                log.info("ota_offer_skipped", version=offer.version, reason=skip)
                return float("inf")
            try:
                artifact = await self.downloader.obtain(http, offer, baseline=self.baseline_version)
            except ArtifactRejected as exc:
                await self.record.fail(offer.version, str(exc))
                return float("inf")  # the regular interval
            except UpdateError as exc:
                self.record.set("failed", offer.version, f"download: {exc}")
                raise
            except OSError as exc:  # the state folder is not writable, the disk is full, ...
                self.record.set("failed", offer.version, f"download: {exc}")
                raise UpdateError(f"cannot store the artifact: {exc}") from exc
            if self._window is not None and not self._window.is_open(self._local_time()):
                wait = self._window.seconds_until_open(self._local_time())
                log.info("ota_waiting_for_window", window=self.ota.window, opens_in_s=round(wait))
                self.record.set("idle", offer.version, None)
                return wait + 1.0
            try:
                await self.applier.apply(offer, artifact)
            except (UpdateError, OSError) as exc:
                await self.record.fail(offer.version, str(exc))
            return float("inf")

    # -- after the restart --------------------------------------------------------------------

    async def watch_health(self) -> None:
        """In a freshly switched-to version: commit once healthy, else roll back and restart."""
        if self.health is not None:
            await self.health.watch()

    def snapshot(self) -> dict[str, Any]:
        """For ``edge-gateway status``."""
        pending = self.state.pending
        checkins = self.checkins
        return {
            "ota": dict(self.status),
            "last_checkin": checkins.last_checkin if checkins else None,
            "last_checkin_at": checkins.last_checkin_at if checkins else None,
            "checkin_error": checkins.last_checkin_error if checkins else None,
            "checkin_failures": checkins.checkin_failures if checkins else 0,
            # what check-ins send as "id" (getCerts' device id, else the thing name) and the
            # account getCerts named
            "device_id": checkins.identity.id if checkins else None,
            "account_id": checkins.identity.account_id if checkins else None,
            "ota_pending": None if pending is None else pending.version,
        }
