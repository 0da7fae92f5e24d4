"""A damaged outbox file: told apart from a new one, moved aside, and what it still holds read.

A zero-length file where a database was (``is_emptied``) is a lost file, not a new one.
``move_aside`` renames the database with its ``-wal`` and ``-shm`` to
``<name>.corrupt-<UTC time>``, kept as found for inspection. ``salvage`` reads a copy of it
for whatever rows can still be read, forwards and backwards past bad pages. Blocking file and
SQLite I/O; the outbox decides when to call them and what becomes of the rows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.outbox_rows import (
    SELECT_EVENTS,
    SELECT_REPORTED,
    Event,
    PendingReported,
    event_from_row,
    reported_from_row,
)

SQLITE_FILES = ("", "-wal", "-shm")  # a database in WAL mode is these three files


def is_emptied(path: Path) -> bool:
    """Zero bytes where a database was (an empty -wal too): not a new file, a lost one."""
    try:
        if path.stat().st_size != 0:
            return False
    except FileNotFoundError:
        return False
    wal = Path(f"{path}-wal")
    return not wal.exists() or wal.stat().st_size == 0


def move_aside(path: Path) -> Path:
    """Rename the database (and its -wal and -shm) to ``<name>.corrupt-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in SQLITE_FILES):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in SQLITE_FILES:
        with suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


@dataclass(frozen=True)
class Salvage:
    """The rows a corrupt outbox file still yielded."""

    reported: PendingReported
    events: list[Event]  # in id order
    last_id: int
    dropped_events: int
    complete: bool  # every row of both tables was read

    @property
    def missing_in_range(self) -> int:
        """Ids missing between the first and the last salvaged event (pending ones, lost)."""
        if not self.events:
            return 0
        return self.events[-1].id - self.events[0].id + 1 - len(self.events)


def salvage(aside: Path) -> Salvage:
    """Best effort: the rows a corrupt outbox still yields. Each table is read forwards and, if
    that stops at a bad page, backwards too, so one bad page loses only its own rows. It reads
    a copy: SQLite would write to the file it opens, and that one is kept as found."""
    scratch = aside.with_name(aside.name + ".salvage")
    try:
        for suffix in ("", "-wal"):
            if Path(f"{aside}{suffix}").exists():
                shutil.copyfile(f"{aside}{suffix}", f"{scratch}{suffix}")
        db = sqlite3.connect(scratch)
    except (OSError, sqlite3.Error):
        _remove(scratch)
        return Salvage({}, [], 0, 0, complete=False)
    try:
        event_rows, events_complete = _scan(db, SELECT_EVENTS, "id")
        reported_rows, reported_complete = _scan(db, SELECT_REPORTED, "rowid")
        last_id = _best_effort_int(db, "SELECT seq FROM sqlite_sequence WHERE name='events'")
        dropped = _best_effort_int(db, "SELECT value FROM counters WHERE name='dropped_events'")
    finally:
        with suppress(sqlite3.Error):
            db.close()
        _remove(scratch)
    events = sorted(
        (event for row in event_rows if (event := event_from_row(row)) is not None),
        key=lambda event: event.id,
    )
    reported = dict(item for row in reported_rows if (item := reported_from_row(row)))
    readable = len(events) == len(event_rows) and len(reported) == len(reported_rows)
    return Salvage(
        reported,
        events,
        max([last_id, *(event.id for event in events)]),
        dropped,
        complete=events_complete and reported_complete and readable,
    )


def _scan(db: sqlite3.Connection, select: str, key: str) -> tuple[list[tuple[Any, ...]], bool]:
    rows: dict[Any, tuple[Any, ...]] = {}
    for order in ("ASC", "DESC"):
        try:
            for row in db.execute(f"{select} ORDER BY {key} {order}"):
                rows.setdefault(row[0], row)
        except sqlite3.Error:
            continue
        return list(rows.values()), order == "ASC"
    return list(rows.values()), False


def _best_effort_int(db: sqlite3.Connection, sql: str) -> int:
    try:
        row = db.execute(sql).fetchone()
    except sqlite3.Error:
        return 0
    return row[0] if row and isinstance(row[0], int) else 0


def _remove(scratch: Path) -> None:
    for suffix in SQLITE_FILES:
        Path(f"{scratch}{suffix}").unlink(missing_ok=True)
