"""Files replaced atomically: readers (and power cuts) see the old content or the new, never half.

``write_atomic`` writes a temp file next to the target, created with its final mode (0600
unless told otherwise, so a secret is never briefly world-readable), syncs it, renames it over
the target and syncs the directory so the rename survives a power cut. ``stage`` and
``fsync_dir`` are its two halves, for callers that rename several files together (a
certificate and its key). Blocking file I/O: call from a thread when on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from gateway.errors import GatewayError

__all__ = ["AtomicWriteError", "fsync_dir", "stage", "write_atomic"]

SECRET_MODE = 0o600


class AtomicWriteError(GatewayError, OSError):
    """A file could not be written (also an ``OSError``, which it replaces)."""


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stage(path: Path, data: bytes, mode: int = SECRET_MODE, *, sync: bool = True) -> Path:
    """``data`` in a new temp file next to ``path``, created with ``mode`` (and synced)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise AtomicWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise AtomicWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = SECRET_MODE, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` (a file of ``mode``) atomically and, unless ``sync`` is
    False (a file nobody needs after a power cut), durably."""
    tmp = stage(path, data, mode, sync=sync)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AtomicWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if sync:
        fsync_dir(path.parent)
