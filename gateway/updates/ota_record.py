"""What the updates remember and what they report: ``state_dir/ota/state.json`` (read and
written atomically) and the status the shadow shows as ``reported.gateway.ota``.

``UpdateRecord`` is shared by the update steps (download, apply, health watch): each saves
the next ``OtaState`` (the transitions are pure, in ``otastate.py``) and sets the phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.updates.ota_guard import STATE_FILE, load_state, save_state
from gateway.updates.otastate import OtaPhase, OtaState, Outcome, record

__all__ = ["MAX_ERROR_CHARS", "STATE_FILE", "UpdateRecord", "load_state", "save_state"]

log = structlog.get_logger()

MAX_ERROR_CHARS = 300  # keeps reported.gateway.ota within the shadow's size budget


class UpdateRecord:
    """The update state (saved in ``directory``) and the reported status of one gateway."""

    def __init__(self, directory: Path, report: Callable[[dict[str, Any]], None]) -> None:
        self.directory = directory
        self.state = OtaState()
        self.status: dict[str, Any] = {"state": "idle", "version": None, "error": None}
        self._report = report

    async def load(self) -> None:
        """Read state.json; the last outcome (e.g. a rollback before the restart) is reported."""
        self.state = await asyncio.to_thread(load_state, self.directory)
        if self.state.last is not None:
            self.status = self.state.last.to_json()
        self._report(dict(self.status))

    async def save(self, state: OtaState) -> None:
        """Write ``state`` to state.json, then make it the current one."""
        await asyncio.to_thread(save_state, self.directory, state)
        self.state = state

    def set(self, phase: OtaPhase, version: str | None, error: str | None = None) -> None:
        """Report a new phase (the error cut to ``MAX_ERROR_CHARS``)."""
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        self.status = {"state": phase, "version": version, "error": error}
        log.info("ota_state", ota_state=phase, version=version, error=error)
        self._report(dict(self.status))

    async def fail(self, version: str, error: str) -> None:
        """Report and remember an update that failed (a state.json that cannot be written is
        logged: the failure is reported all the same)."""
        log.error("ota_failed", version=version, error=error)
        self.set("failed", version, error)
        try:
            await self.save(record(self.state, Outcome("failed", version, self.status["error"])))
        except OSError as exc:
            log.error("ota_state_not_saved", error=str(exc))
