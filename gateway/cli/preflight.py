"""Checks ``run`` makes before starting anything, shared with ``check-config``: the folders the
daemon writes (``state_dir``, the admin socket's) must be usable by the user running it.

Run by hand as a normal user with the defaults (``/var/lib/edge-gateway``,
``/run/edge-gateway``), the daemon would otherwise fail deep inside the outbox with a
``PermissionError``; this says which folder and what to do instead.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from gateway.errors import GatewayError

OWN_STATE_DIR = "~/.local/state/edge-gateway"


def folder_problem(folder: Path) -> str | None:
    """Why the daemon cannot write in ``folder`` (creating it if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    if not folder.is_dir():
        return "not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


def check_folders(config: Path, state_dir: Path, admin_socket: Path | None = None) -> None:
    """``GatewayError`` naming the first folder the daemon could not write, and what to do."""
    folders = [("state_dir", state_dir, OWN_STATE_DIR)]
    if admin_socket is not None:
        folders.append(("admin_socket", admin_socket.parent, f"{OWN_STATE_DIR}/admin.sock"))
    for key, folder, example in folders:
        problem = folder_problem(folder)
        if problem is None:
            continue
        raise GatewayError(
            f"{key}: cannot use {folder} as user {_user()} ({problem}). Run the installed "
            f"service (sudo systemctl start edge-gateway), or set '{key}: {example}' in "
            f"{config} to use a folder you own"
        )
