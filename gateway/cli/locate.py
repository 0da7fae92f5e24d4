"""Where the daemon of a config keeps its state and its admin socket, as another command finds
them (``status -c``, ``mock set -c``, ``credentials -c``).

A config that names ``state_dir``/``admin_socket`` says where they are. One that does not
leaves them to the daemon's environment (``gateway.paths``): the systemd unit's directories,
which a command run by another user (a member of the service's group, a program's
``credential_process``) does not see. Such a command looks in its own default first, then in
the service's (``/var/lib/edge-gateway``, ``/run/edge-gateway/admin.sock``, where the unit's
``StateDirectory=``/``RuntimeDirectory=`` put them).
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import GatewayConfig
from gateway.paths import SOCKET_NAME, SYSTEM_RUNTIME_DIR, SYSTEM_STATE_DIR

SERVICE_STATE_DIR = SYSTEM_STATE_DIR
SERVICE_SOCKET = SYSTEM_RUNTIME_DIR / SOCKET_NAME


def state_dirs(config: GatewayConfig) -> list[Path]:
    """The state folders to try for ``config``'s daemon, in order."""
    if "state_dir" in config.keys_given:
        return [config.state_dir]
    return list(dict.fromkeys([config.state_dir, SERVICE_STATE_DIR]))


def admin_sockets(config: GatewayConfig) -> list[Path]:
    """The admin sockets to try for ``config``'s daemon, in order."""
    if "admin_socket" in config.keys_given:
        return [config.admin_socket]
    return list(dict.fromkeys([config.admin_socket, SERVICE_SOCKET]))


def first_existing(paths: list[Path]) -> Path:
    """The first of ``paths`` that exists, else the first (its error names that one)."""
    return next((path for path in paths if path.exists()), paths[0])
