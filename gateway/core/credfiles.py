"""Certificate, key and CA files, size-checked before anything reads them (blocking file I/O).

A PEM certificate is a few KB and a CA bundle a few hundred; a path pointing at a huge file (a
disk image, a log, a sparse file claiming 3 GB) must not be read whole into memory, by us or by
OpenSSL. ``read_credential_file`` reads through one descriptor and never more than the cap;
``check_credential_file`` is for paths handed to OpenSSL (``load_cert_chain`` and friends).
Both refuse anything but a regular file, and name the file in the error.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.errors import GatewayError

MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024  # far above any real certificate chain or CA bundle


class CredentialFileError(GatewayError):
    """A certificate, key or CA file is missing, not a regular file, or too large."""


def _size_problem(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size > MAX_CREDENTIAL_FILE_BYTES:
        return (
            f"is {_size_text(info.st_size)} ({info.st_size} bytes); "
            f"at most {_size_text(MAX_CREDENTIAL_FILE_BYTES)} is accepted"
        )
    return None


def _size_text(size: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def check_credential_file(path: Path, what: str) -> None:
    """Refuse ``path`` unless it is a regular file of at most the cap (before OpenSSL reads it)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialFileError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if (problem := _size_problem(info)) is not None:
        raise CredentialFileError(f"{what} {path} {problem}")


def read_credential_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``, refusing a non-regular or oversized file without reading it."""
    try:
        # O_NONBLOCK: opening a FIFO put in the file's place must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            # fstat on the open descriptor: the file checked is the file read.
            if (problem := _size_problem(os.fstat(fh.fileno()))) is not None:
                raise CredentialFileError(f"{what} {path} {problem}")
            data = fh.read(MAX_CREDENTIAL_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialFileError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > MAX_CREDENTIAL_FILE_BYTES:  # it grew after the check
        raise CredentialFileError(
            f"{what} {path} is larger than {_size_text(MAX_CREDENTIAL_FILE_BYTES)}"
        )
    return data
