"""The update bookkeeping of ``state_dir/ota/state.json``: pure data and transitions (no I/O).

A ``wheel`` update installs into the other A/B slot, records a ``Pending`` entry, switches the
``current`` link and restarts. The new version commits once it is connected and synced; if it
does not within ``health_timeout_s`` (or it cannot even start: the guard counts starts), the
previous slot comes back and the artifact goes on the ``rolled_back`` list, so it is never
applied again unless the cloud offers a different artifact (checksum) for that version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

SLOTS = ("a", "b")
MAX_STARTS = 3  # starts of a pending version (counted by the guard) before it is rolled back
ROLLED_BACK_KEPT = 20  # the rolled-back list is bounded

OtaPhase = Literal[
    "idle", "downloading", "verifying", "applying", "applied", "failed", "rolled_back"
]


@dataclass(frozen=True)
class Attempt:
    """A version (with the artifact's checksum) the device installed and rolled back from."""

    version: str
    checksum: str


def other_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; expected 'a' or 'b'")
    return SLOTS[1 - SLOTS.index(slot)]


@dataclass(frozen=True)
class Pending:
    """A switched-to slot that has not proven itself yet."""

    slot: str
    previous: str
    version: str
    checksum: str
    switched_at: float  # epoch seconds
    starts: int = 0  # starts seen by the guard


@dataclass(frozen=True)
class Outcome:
    """How the last update ended; reported in the shadow (also after the restart)."""

    state: OtaPhase
    version: str
    error: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"state": self.state, "version": self.version, "error": self.error}


@dataclass(frozen=True)
class OtaState:
    pending: Pending | None = None
    rolled_back: tuple[Attempt, ...] = ()
    last: Outcome | None = None
    # command mode: the version (and artifact) the command applied last, checked in as running.
    installed: Attempt | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys of newer versions, kept

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data["pending"] = None if self.pending is None else vars(self.pending).copy()
        data["rolled_back"] = [vars(a).copy() for a in self.rolled_back]
        data["last"] = None if self.last is None else self.last.to_json()
        data["installed"] = None if self.installed is None else vars(self.installed).copy()
        return data

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode()

    @classmethod
    def loads(cls, text: bytes | str) -> OtaState:
        """Parse state.json; raises ValueError when it is not a state this code understands."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("state.json must hold a JSON object")
        known = {"pending", "rolled_back", "last", "installed"}
        try:
            pending = data.get("pending")
            last = data.get("last")
            installed = data.get("installed")
            return cls(
                pending=None if pending is None else Pending(**pending),
                rolled_back=tuple(Attempt(**a) for a in data.get("rolled_back") or ()),
                last=None if last is None else Outcome(**last),
                installed=None if installed is None else Attempt(**installed),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except TypeError as exc:
            raise ValueError(f"unexpected state.json layout: {exc}") from exc


def begin(
    state: OtaState, *, slot: str, previous: str, version: str, checksum: str, now: float
) -> OtaState:
    """The new slot is installed and about to become current."""
    pending = Pending(slot, previous, version, checksum, now)
    return replace(state, pending=pending, last=Outcome("applying", version))


def commit(state: OtaState) -> OtaState:
    """The pending version proved itself: it stays."""
    if state.pending is None:
        return state
    return replace(state, pending=None, last=Outcome("applied", state.pending.version))


def roll_back(state: OtaState, error: str) -> OtaState:
    """The pending version failed: remember its artifact so it is never applied again."""
    if state.pending is None:
        return state
    attempt = Attempt(state.pending.version, state.pending.checksum)
    kept = (*(a for a in state.rolled_back if a != attempt), attempt)
    return replace(
        state,
        pending=None,
        rolled_back=kept[-ROLLED_BACK_KEPT:],
        last=Outcome("rolled_back", state.pending.version, error),
    )


def record(state: OtaState, outcome: Outcome, installed: Attempt | None = None) -> OtaState:
    """A finished command-mode update (or a failed one of either mode)."""
    return replace(state, last=outcome, installed=installed or state.installed)


StartAction = Literal["none", "watch", "roll_back"]


def on_start(state: OtaState, *, current_slot: str | None, running_version: str) -> StartAction:
    """What a starting gateway does about a pending update.

    ``watch``: it is the new version in the new slot, so it must get healthy in time;
    ``roll_back``: ``current`` points to the new slot but another version runs from it (the
    install is not what was verified), so the previous slot comes back; ``none`` otherwise.
    """
    pending = state.pending
    if pending is None or current_slot != pending.slot:
        return "none"
    return "watch" if running_version == pending.version else "roll_back"


GuardAction = Literal["none", "count", "roll_back"]


def guard(
    state: OtaState, *, current_slot: str | None, now: float, health_timeout_s: float
) -> tuple[OtaState, GuardAction]:
    """Before every start (``edge-gateway ota guard``, run from the previous slot): count the
    starts of a pending version; after ``MAX_STARTS`` or well past its health deadline, roll
    back (the new version could not even get far enough to do it itself)."""
    pending = state.pending
    if pending is None or current_slot != pending.slot:
        return state, "none"
    if pending.starts >= MAX_STARTS:
        return roll_back(state, f"the new version did not become healthy in {MAX_STARTS} starts"), (
            "roll_back"
        )
    if now - pending.switched_at > 2 * health_timeout_s + 60:
        return roll_back(state, "the new version was not healthy in time"), "roll_back"
    return replace(state, pending=replace(pending, starts=pending.starts + 1)), "count"
