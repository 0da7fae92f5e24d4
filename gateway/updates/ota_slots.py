"""The A/B slot links of ``wheel`` updates under ``ota.root``: ``current`` (and ``previous``)
point at ``slots/a`` or ``slots/b``; reading which one is current and switching atomically.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_slot(root: Path) -> str | None:
    """The slot ``root/current`` points to (``slots/a`` -> ``a``), None if it is no A/B link."""
    try:
        target = os.readlink(root / "current")
    except OSError:
        return None
    slot = Path(target).name
    return slot if Path(target).parent.name == "slots" and slot in ("a", "b") else None


def switch_slot(root: Path, slot: str, previous: str | None = None) -> None:
    """Point ``current`` (and ``previous``) at slots atomically: a new link renamed over the old."""
    links = {"current": slot} | ({"previous": previous} if previous else {})
    for link, target in links.items():
        temporary = root / f".{link}.new"
        temporary.unlink(missing_ok=True)
        os.symlink(f"slots/{target}", temporary)
        os.replace(temporary, root / link)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename survives a power cut
    finally:
        os.close(fd)
