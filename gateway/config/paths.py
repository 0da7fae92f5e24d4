"""Path fields of the configuration: files that must exist, and paths relative to the config
file. Shared by ``schema`` and the cloud blocks in their own modules (``mindconnect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated


class MustExist:
    """Marks a path field whose file must exist; the load step checks it after validation."""

    def __repr__(self) -> str:
        return "MustExist()"


MUST_EXIST = MustExist()
ExistingFile = Annotated[Path, MUST_EXIST]
OptionalExistingFile = Annotated[Path | None, MUST_EXIST]


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (the config file's folder)."""
    path = path.expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path
