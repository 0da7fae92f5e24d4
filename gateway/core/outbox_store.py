"""One open outbox database: its schema, every SQL statement the outbox runs, and row counts.

Two tables (and a counter): ``reported`` holds the last accepted value per shadow key,
``events`` every event in order under an id that is never reused. Every method blocks and lets
``sqlite3`` errors through as they come (an ``OperationalError`` is the disk's, any other
``DatabaseError`` a damaged file): what to do about them, memory or a replacement file, is the
``Outbox``'s decision. The row counts are taken when the file is opened or filled by a salvage
and afterwards kept exact by every write, changed only once its transaction committed, so the
outbox can publish its depth without a query.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from gateway.core.outbox_rows import (
    SELECT_EVENTS,
    SELECT_REPORTED,
    Change,
    Event,
    PendingReported,
    event_from_row,
    reported_from_row,
)
from gateway.core.outbox_salvage import Salvage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reported (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    observed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    value TEXT NOT NULL,
    observed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_INSERT_EVENT = "INSERT INTO events(id, device, value, observed_at) VALUES(?,?,?,?)"
_INSERT_EVENT_IF_NEW = _INSERT_EVENT.replace("INSERT", "INSERT OR IGNORE", 1)


class OutboxDatabase:
    """An open, checked outbox file and the rows it holds (see the module docstring)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        max_events: int,
        fresh: bool,
        last_id: int,
        dropped_events: int,
    ) -> None:
        self.connection = connection
        self.max_events = max_events
        # What the file said when it was opened:
        self.fresh = fresh  # created by this open
        self.last_id_at_open = last_id
        self.dropped_at_open = dropped_events
        # Rows in the file, kept exact by every write of ours (counted at open).
        self.events, self.reported = _count_rows(connection)

    @classmethod
    def open(
        cls, path: Path, *, sync: str, max_bytes: int | None, max_events: int
    ) -> OutboxDatabase:
        """Connect, check the file's structure and load the counters."""
        fresh = not path.exists()
        db = _connect(path, sync=sync, max_bytes=max_bytes)
        try:
            (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            row = db.execute("SELECT value FROM counters WHERE name='dropped_events'").fetchone()
            dropped = int(row[0]) if row else 0
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
            last_id = int(row[0]) if row else 0
            return cls(
                db, max_events=max_events, fresh=fresh, last_id=last_id, dropped_events=dropped
            )
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.connection.close()

    # -- writing --------------------------------------------------------------------------------

    def record(
        self,
        changes: Sequence[Change],
        next_id: Callable[[], int],
        count_dropped: Callable[[int], int],
    ) -> None:
        """Store ``changes`` in one transaction, events under ids from ``next_id``; the oldest
        events beyond the bound are deleted and ``count_dropped(n)`` gives the new total."""
        db = self.connection
        reported = self.reported  # the counts change only once the transaction committed
        with _transaction(db):
            for change in changes:
                text = json.dumps(change.value)
                reported += self._upsert_reported(change.device, text, change.observed_at)
                if change.event:
                    db.execute(_INSERT_EVENT, (next_id(), change.device, text, change.observed_at))
            events = self._enforce_bound(count_dropped)
        self.events, self.reported = events, reported

    def _enforce_bound(self, count_dropped: Callable[[int], int]) -> int:
        """Delete the oldest events beyond the bound; the events stored afterwards. (Counting
        here, in the writer's thread, also meets a corrupt page at the write, not later.)"""
        db = self.connection
        (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        excess = count - self.max_events
        if excess <= 0:
            return int(count)
        db.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
            (excess,),
        )
        self._store_dropped(count_dropped(excess))
        return self.max_events

    def _upsert_reported(self, name: str, text: str, observed_at: float) -> int:
        """Store the value of ``name``; 1 if that added a row, 0 if it replaced one."""
        db = self.connection
        added = db.execute(
            "INSERT OR IGNORE INTO reported(name, value, observed_at) VALUES(?,?,?)",
            (name, text, observed_at),
        ).rowcount
        if added:
            return 1
        db.execute(
            "UPDATE reported SET value=?, observed_at=? WHERE name=?", (text, observed_at, name)
        )
        return 0

    def _store_dropped(self, dropped_events: int) -> None:
        self.connection.execute(
            "INSERT INTO counters(name, value) VALUES('dropped_events', ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (dropped_events,),
        )

    def move_in(self, reported: PendingReported, events: Sequence[Event]) -> None:
        """Store what waited in memory, in one transaction; events keep their ids, so a
        redelivery stays recognisable."""
        db = self.connection
        added = 0
        with _transaction(db):
            for name, (value, observed_at) in reported.items():
                added += self._upsert_reported(name, json.dumps(value), observed_at)
            for event in events:
                db.execute(
                    _INSERT_EVENT,
                    (event.id, event.device, json.dumps(event.value), event.observed_at),
                )
        self.events += len(events)
        self.reported += added

    def store_salvage(self, salvage: Salvage, *, last_id: int, dropped_events: int) -> None:
        """Carry what a corrupt file yielded into this (fresh) one, in one transaction."""
        db = self.connection
        with _transaction(db):
            for name, (value, observed_at) in salvage.reported.items():
                self._upsert_reported(name, json.dumps(value), observed_at)
            for event in salvage.events:  # same ids: a redelivery stays recognisable
                db.execute(
                    _INSERT_EVENT_IF_NEW,
                    (event.id, event.device, json.dumps(event.value), event.observed_at),
                )
            # The next open counts on from here, not from the highest id that was salvaged.
            seq = (last_id,)
            sql = "UPDATE sqlite_sequence SET seq=? WHERE name='events'"
            if db.execute(sql, seq).rowcount == 0:
                db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES('events', ?)", seq)
            if dropped_events:
                self._store_dropped(dropped_events)
        self.events, self.reported = _count_rows(db)

    # -- reading and deleting -------------------------------------------------------------------

    def pending_reported(self) -> tuple[PendingReported, list[tuple[Any]]]:
        """Every reported value stored, and the rowids of rows that no longer decode."""
        pending: PendingReported = {}
        unreadable = []
        for row in self.connection.execute(SELECT_REPORTED).fetchall():
            item = reported_from_row(row)
            if item is None:
                unreadable.append((row[0],))
            else:
                pending[item[0]] = item[1]
        return pending, unreadable

    def next_events(self, limit: int) -> tuple[list[Event], list[tuple[Any]]]:
        """The oldest ``limit`` events in order, and the ids of rows among them that no longer
        decode."""
        events = []
        unreadable = []
        sql = f"{SELECT_EVENTS} ORDER BY id LIMIT ?"
        for row in self.connection.execute(sql, (limit,)).fetchall():
            event = event_from_row(row)
            if event is None:
                unreadable.append((row[0],))
            else:
                events.append(event)
        return events, unreadable

    def delete_reported(self, rows: list[tuple[str, str, bool]]) -> int:
        """Delete each ``(name, value as JSON, any value)``: the value of ``name`` if it is
        still ``value`` (or whatever it is, when the flag is set). The rows deleted."""
        sql = "DELETE FROM reported WHERE name=? AND (value=? OR ?)"
        deleted = self._delete(sql, rows)
        self.reported -= deleted
        return deleted

    def delete_events(self, ids: Iterable[int]) -> int:
        deleted = self._delete("DELETE FROM events WHERE id=?", [(i,) for i in ids])
        self.events -= deleted
        return deleted

    def delete_rows(self, table: Literal["events", "reported"], rowids: list[tuple[Any]]) -> int:
        deleted = self._delete(f"DELETE FROM {table} WHERE rowid=?", rowids)
        if table == "events":
            self.events -= deleted
        else:
            self.reported -= deleted
        return deleted

    def _delete(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Run a delete for each of ``rows`` in one transaction; the rows it deleted."""
        with _transaction(self.connection):
            deleted = self.connection.executemany(sql, rows).rowcount
        return max(deleted, 0)


def _count_rows(db: sqlite3.Connection) -> tuple[int, int]:
    """Events and reported rows in ``db``: counted only when a database is (re)opened or filled
    by a salvage; afterwards every write of ours keeps the figures exact."""
    events, reported = db.execute(
        "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM reported)"
    ).fetchone()
    return int(events), int(reported)


def _connect(path: Path, *, sync: str, max_bytes: int | None) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut; NORMAL: survives a crash or kill -9 only.
        db.execute(f"PRAGMA synchronous={sync.upper()}")
        if max_bytes is not None:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={max(16, max_bytes // page_size)}")
        db.executescript(_SCHEMA)
        path.chmod(0o600)
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, IOERR); a second ROLLBACK
        # would fail and hide the real error.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
