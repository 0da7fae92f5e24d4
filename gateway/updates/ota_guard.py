"""``edge-gateway ota guard``, light enough to run before every start (``ExecStartPre``).

It reads only what it needs from the config (``state_dir``, ``ota.mode``, ``ota.root``,
``ota.health_timeout_s``) and ``state_dir/ota/state.json``, without loading the config models,
asyncio or the logging set-up: those are loaded only when a config does not read cleanly here
(the caller then validates it in full, for its exact errors) or when the guard logs a rollback.
Without updates in ``wheel`` mode (most starts) it loads neither the update state's models nor
the file helpers: only the YAML reader.

Also the home of ``state.json``'s reading and writing (``load_state``, ``save_state``), which
``ota_record`` re-exports for the updater.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from gateway.paths import default_state_dir

if TYPE_CHECKING:
    from gateway.updates.otastate import OtaState

STATE_FILE = "state.json"
# The schema's defaults (gateway.config.schema: OtaConfig; GatewayConfig.state_dir's is
# gateway.paths.default_state_dir(): the unit's StateDirectory, FHS for root, else XDG).
DEFAULT_OTA_ROOT = "/opt/edge-gateway"
DEFAULT_HEALTH_TIMEOUT_S = 300.0
MAX_HEALTH_TIMEOUT_S = 86_400


def _log() -> Any:
    import structlog  # only when there is something to say (it brings asyncio)

    return structlog.get_logger()


def load_state(directory: Path) -> OtaState:
    """state.json, or a fresh state when there is none or it cannot be understood (blocking)."""
    from gateway.updates.otastate import OtaState

    try:
        return OtaState.loads((directory / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return OtaState()
    except (OSError, ValueError) as exc:
        _log().error("ota_state_unreadable", path=str(directory / STATE_FILE), error=str(exc))
        return OtaState()


def save_state(directory: Path, state: OtaState) -> None:
    """Write state.json atomically (``gateway.core.atomicfile``) (blocking)."""
    from gateway.core.atomicfile import write_atomic

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(directory / STATE_FILE, state.dumps(), 0o644)


class GuardSettings(NamedTuple):  # not a dataclass: importing dataclasses takes ~9 ms
    """What the guard needs; ``root`` is None when updates are not in ``wheel`` mode."""

    state_dir: Path
    root: Path | None
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S


def _path(raw: object, default: str, base_dir: Path) -> Path | None:
    """A path value as the schema resolves it (``~`` expanded, relative to the config's folder);
    None if it is not a plain string."""
    if raw is None:
        raw = default
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base_dir / path


def guard_settings(path: Path) -> GuardSettings | None:
    """The guard's settings read straight from the YAML file; None when anything it needs is
    not plainly valid (the caller then loads the config in full and reports its problems)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    base_dir = path.resolve().parent
    state_dir = _path(data.get("state_dir"), str(default_state_dir()), base_dir)
    if state_dir is None:
        return None
    ota = data.get("ota")
    if ota is None:
        return GuardSettings(state_dir, None)
    if not isinstance(ota, dict) or ota.get("mode") not in ("command", "wheel"):
        return None
    if ota["mode"] == "command":
        return GuardSettings(state_dir, None)
    root = _path(ota.get("root"), DEFAULT_OTA_ROOT, base_dir)
    timeout = ota.get("health_timeout_s", DEFAULT_HEALTH_TIMEOUT_S)
    if (
        root is None
        or isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_HEALTH_TIMEOUT_S
    ):
        return None
    return GuardSettings(state_dir, root, float(timeout))


def guard_slots(settings: GuardSettings, now: float | None = None) -> str:
    """Before a start: count the starts of a pending version and roll back one that cannot get
    healthy (blocking; run from the previous slot by systemd). Returns the action taken."""
    if settings.root is None:
        return "none"
    directory = settings.state_dir / "ota"
    try:
        (directory / STATE_FILE).stat()
    except FileNotFoundError:
        return "none"  # no update recorded: nothing pending (what load_state's fresh state gives)
    except OSError:
        pass  # load_state reports it
    import time

    from gateway.updates.ota_slots import read_slot, switch_slot
    from gateway.updates.otastate import guard

    state = load_state(directory)
    new_state, action = guard(
        state,
        current_slot=read_slot(settings.root),
        now=time.time() if now is None else now,
        health_timeout_s=settings.health_timeout_s,
    )
    if action == "roll_back" and state.pending is not None:
        switch_slot(settings.root, state.pending.previous)
        _log().error("ota_rolled_back", version=state.pending.version, by="guard")
    if action != "none":
        save_state(directory, new_state)
    return action
