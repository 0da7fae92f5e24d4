"""Default locations, as a Linux service and a Linux user expect them.

Under the systemd unit, systemd hands the service its directories (``StateDirectory=``,
``RuntimeDirectory=``, ``ConfigurationDirectory=`` set ``$STATE_DIRECTORY``,
``$RUNTIME_DIRECTORY``, ``$CONFIGURATION_DIRECTORY``); root without a unit gets the FHS
folders; any other user without a unit gets the XDG Base Directory ones (``$XDG_STATE_HOME``,
default ``~/.local/state``; ``$XDG_RUNTIME_DIR``), so a gateway run by hand never needs root.
Every function reads the environment when called (a config's defaults are taken at load).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

NAME = "edge-gateway"
SYSTEM_STATE_DIR = Path("/var/lib") / NAME
SYSTEM_RUNTIME_DIR = Path("/run") / NAME
SYSTEM_CONFIG = Path("/etc") / NAME / "gateway.yaml"
CONFIG_ENV = "EDGE_GATEWAY_CONFIG"
SOCKET_NAME = "admin.sock"
CONFIG_NAME = "gateway.yaml"


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _is_root(euid: int | None) -> bool:
    return (os.geteuid() if euid is None else euid) == 0


def _systemd_dir(environ: Mapping[str, str], variable: str) -> Path | None:
    """The first folder of a systemd ``*_DIRECTORY`` variable (a ':'-list when the unit names
    several), if it is an absolute path."""
    first = environ.get(variable, "").split(":")[0]
    return Path(first) if first.startswith("/") else None


def _xdg_dir(environ: Mapping[str, str], variable: str) -> Path | None:
    """An XDG variable's folder; relative values are invalid by the spec and ignored."""
    value = environ.get(variable, "")
    return Path(value) if value.startswith("/") else None


def default_state_dir(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """``$STATE_DIRECTORY``; else /var/lib/edge-gateway for root; else the XDG state home's
    edge-gateway folder (``$XDG_STATE_HOME`` or ``~/.local/state``)."""
    env = _env(environ)
    if (unit := _systemd_dir(env, "STATE_DIRECTORY")) is not None:
        return unit
    if _is_root(euid):
        return SYSTEM_STATE_DIR
    home = _xdg_dir(env, "XDG_STATE_HOME") or Path(env.get("HOME") or Path.home()) / ".local/state"
    return home / NAME


def default_admin_socket(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """``$RUNTIME_DIRECTORY/admin.sock``; else /run/edge-gateway/admin.sock for root; else in
    ``$XDG_RUNTIME_DIR/edge-gateway``, or in the state folder when the session has none."""
    env = _env(environ)
    if (unit := _systemd_dir(env, "RUNTIME_DIRECTORY")) is not None:
        return unit / SOCKET_NAME
    if _is_root(euid):
        return SYSTEM_RUNTIME_DIR / SOCKET_NAME
    if (runtime := _xdg_dir(env, "XDG_RUNTIME_DIR")) is not None:
        return runtime / NAME / SOCKET_NAME
    return default_state_dir(env, euid) / SOCKET_NAME


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """What ``-c`` defaults to: ``$EDGE_GATEWAY_CONFIG``, else gateway.yaml in
    ``$CONFIGURATION_DIRECTORY`` (under the unit), else /etc/edge-gateway/gateway.yaml."""
    env = _env(environ)
    if value := env.get(CONFIG_ENV):
        return Path(value)
    if (unit := _systemd_dir(env, "CONFIGURATION_DIRECTORY")) is not None:
        return unit / CONFIG_NAME
    return SYSTEM_CONFIG
