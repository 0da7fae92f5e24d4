"""What the THiNX link keeps in ``state_dir/thinx/``: the registration (``registration.json``:
udid, owner, alias, auto_update, last check-in) and the last configuration push
(``configuration.json``). Both written atomically with mode 0600 (blocking file I/O: call from
a thread on the event loop). The API key is never written here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gateway.core.atomicfile import write_atomic

REGISTRATION_FILE = "registration.json"
CONFIGURATION_FILE = "configuration.json"
MAX_STATE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Registration:
    udid: str = ""  # empty until the server assigns one
    owner: str | None = None
    alias: str | None = None
    auto_update: bool | None = None
    last_checkin: str | None = None  # ISO time of the last answered check-in
    last_checkin_at: float | None = None
    server_timestamp: float | None = None  # the answer's "timestamp"
    version: str | None = None  # what the last check-in reported as running

    def with_changes(self, **changes: Any) -> Registration:
        return replace(self, **changes)


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_STATE_BYTES} bytes")
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object")
    return value


def load_registration(directory: Path) -> Registration:
    """The stored registration, or an empty one (none yet, or unreadable: register again)."""
    try:
        data = _read_object(directory / REGISTRATION_FILE)
    except (OSError, ValueError):
        return Registration()
    if data is None:
        return Registration()
    known = {name: data[name] for name in Registration.__dataclass_fields__ if name in data}
    try:
        registration = Registration(**known)
    except TypeError:
        return Registration()
    if not isinstance(registration.udid, str):
        return Registration()
    return registration


def save_registration(directory: Path, registration: Registration) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps(asdict(registration), indent=2, sort_keys=True).encode() + b"\n"
    write_atomic(directory / REGISTRATION_FILE, data, 0o600)


def load_configuration(directory: Path) -> dict[str, Any] | None:
    try:
        data = _read_object(directory / CONFIGURATION_FILE)
    except (OSError, ValueError):
        return None
    if data is None or not isinstance(data.get("configuration"), dict):
        return None
    configuration: dict[str, Any] = data["configuration"]
    return configuration


def save_configuration(directory: Path, values: Mapping[str, Any], received_at: str) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"configuration": dict(values), "received_at": received_at}
    write_atomic(directory / CONFIGURATION_FILE, json.dumps(body, indent=2).encode() + b"\n", 0o600)
