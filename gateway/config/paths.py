"""Path fields of the config: the marker of files that must exist (checked by
``gateway.config.load``), and relative paths resolved against the config file's folder.

Apart from ``schema`` so that the config's own modules (``credentials``, ``thinx``) can use them
without an import cycle.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

from gateway.config.rules import AfterValidator, ValidationInfo


class MustExist:
    """Marks a path field whose file must exist; the load step checks it after validation."""

    def __repr__(self) -> str:
        return "MustExist()"


MUST_EXIST = MustExist()


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (the config file's folder).

    A ``~user`` that names no user stays as written, as a shell leaves it; the file check then
    reports the file missing at its key."""
    with contextlib.suppress(RuntimeError):  # "Could not determine home directory."
        path = path.expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def resolve(path: Path, info: ValidationInfo) -> Path:
    return resolve_path(path, (info.context or {}).get("base_dir"))


# A path relative to the config file's folder (``~`` expanded).
ResolvedPath = Annotated[Path, AfterValidator(resolve)]
ExistingFile = Annotated[ResolvedPath, MUST_EXIST]
OptionalExistingFile = Annotated[ResolvedPath | None, MUST_EXIST]
