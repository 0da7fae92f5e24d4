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


def folder_problem(folder: Path, *, create: bool = True) -> str | None:
    """Why the daemon cannot write in ``folder``, or None. With ``create`` a missing folder
    is made (as the daemon would); without, the nearest existing folder above it must let
    the user create it (check-config changes nothing)."""
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "permission denied" if existing == folder else f"cannot create it in {existing}"
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


def folder_problems(
    config: Path, state_dir: Path, admin_socket: Path | None = None, *, create: bool = True
) -> list[tuple[str, str]]:
    """(config key, what is wrong and what to do) for each folder the daemon could not write."""
    folders = [("state_dir", state_dir, OWN_STATE_DIR)]
    if admin_socket is not None:
        folders.append(("admin_socket", admin_socket.parent, f"{OWN_STATE_DIR}/admin.sock"))
    return [
        (
            key,
            f"cannot use {folder} as user {_user()} ({problem}). Run the installed service "
            f"(sudo systemctl start edge-gateway), or set '{key}: {example}' in {config} to "
            "use a folder you own",
        )
        for key, folder, example in folders
        if (problem := folder_problem(folder, create=create)) is not None
    ]


def check_folders(config: Path, state_dir: Path, admin_socket: Path | None = None) -> None:
    """``GatewayError`` naming the first folder the daemon could not write, and what to do."""
    for key, message in folder_problems(config, state_dir, admin_socket):
        raise GatewayError(f"{key}: {message}")
