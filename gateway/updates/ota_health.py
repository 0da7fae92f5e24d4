"""Whether a switched-to ``wheel`` version proves itself: ``HealthWatch`` (the ``ota_health``
task of the restarted gateway) commits the slot once connected and synced within
``ota.health_timeout_s`` and otherwise switches back and restarts; ``run_guard`` (``edge-gateway
ota guard``, before every start) rolls back a version that cannot even start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.config import GatewayConfig, OtaConfig
from gateway.updates.ota_download import remove_other_artifacts
from gateway.updates.ota_guard import DEFAULT_HEALTH_TIMEOUT_S, GuardSettings, guard_slots
from gateway.updates.ota_record import UpdateRecord
from gateway.updates.ota_slots import read_slot, switch_slot
from gateway.updates.otastate import commit, on_start, roll_back

log = structlog.get_logger()

HEALTH_POLL_S = 0.2


def run_guard(config: GatewayConfig, now: float | None = None) -> str:
    """``edge-gateway ota guard`` for a loaded config (the CLI reads the few settings itself,
    see ``gateway.updates.ota_guard``)."""
    ota = config.ota
    root = ota.root if ota is not None and ota.mode == "wheel" else None
    timeout = ota.health_timeout_s if ota is not None else DEFAULT_HEALTH_TIMEOUT_S
    return guard_slots(GuardSettings(config.state_dir, root, timeout), now)


class HealthWatch:
    """Commits or rolls back the pending slot of ``record`` for the running ``version``."""

    def __init__(
        self,
        ota: OtaConfig,
        record: UpdateRecord,
        *,
        version: str,
        healthy: Callable[[], bool],
        restart: Callable[[], None],
    ) -> None:
        self.ota = ota
        self.version = version
        self._record = record
        self._healthy = healthy
        self._restart = restart

    async def watch(self) -> None:
        """In a freshly switched-to version: commit once healthy, else roll back and restart."""
        if self.ota.mode != "wheel" or self._record.state.pending is None:
            return
        try:
            await self._watch()
        except OSError as exc:
            # Links or state.json could not be written: restart, and let the guard (which
            # counts starts) roll back from the previous slot.
            log.error("ota_health_check_failed", error=str(exc))
            self._restart()

    async def _watch(self) -> None:
        pending = self._record.state.pending
        assert pending is not None
        current = await asyncio.to_thread(read_slot, self.ota.root)
        action = on_start(self._record.state, current_slot=current, running_version=self.version)
        if action == "none":
            if current != pending.slot:  # switched back meanwhile (the guard, or by hand)
                await self._rolled_back("the new version did not stay current", switch=False)
            return
        if action == "roll_back":
            await self._rolled_back(f"slot {pending.slot} does not run {pending.version}")
            return
        timeout = self.ota.health_timeout_s
        log.info("ota_health_check", version=pending.version, timeout_s=timeout)
        self._record.set("applying", pending.version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._healthy():
                await self._record.save(commit(self._record.state))
                await asyncio.to_thread(remove_other_artifacts, self._record.directory, keep=None)
                log.info("ota_committed", version=pending.version, slot=pending.slot)
                self._record.set("applied", pending.version)
                return
            await asyncio.sleep(HEALTH_POLL_S)
        await self._rolled_back(f"not connected and shadow synced within {timeout:g} s")

    async def _rolled_back(self, error: str, *, switch: bool = True) -> None:
        pending = self._record.state.pending
        assert pending is not None
        if switch:
            await asyncio.to_thread(switch_slot, self.ota.root, pending.previous, pending.slot)
        await self._record.save(roll_back(self._record.state, error))
        log.error("ota_rolled_back", version=pending.version, slot=pending.previous, error=error)
        self._record.set("rolled_back", pending.version, error)
        if switch:
            self._restart()  # systemd starts the previous version again
