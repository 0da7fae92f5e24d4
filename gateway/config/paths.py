"""Path fields of the config: the marker of files that must exist, and relative paths.

Apart from ``schema`` so that the config's own modules (``credentials``) can use them too
without an import cycle; ``schema`` re-exports both names.
"""

from __future__ import annotations

from pathlib import Path


class MustExist:
    """Marks a path field whose file must exist; the load step checks it after validation."""

    def __repr__(self) -> str:
        return "MustExist()"


MUST_EXIST = MustExist()


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (the config file's folder)."""
    path = path.expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path
