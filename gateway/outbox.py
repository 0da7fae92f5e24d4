"""The durable outbox: accepted changes survive crashes, kill -9 and power cuts until delivered.

SQLite in WAL mode (stdlib ``sqlite3``: one file, atomic commits, no server; on a Pi's SD card
it is the most battle-tested embedded store there is). Two tables:

- ``reported``: the last accepted value per shadow key (coalesced: last value wins);
- ``events``: every change of a device with ``events: true``, in order, with its observation
  time and an id that is never reused, bounded by ``max_events`` (oldest dropped, counted).

Rows are deleted only once the broker acknowledged them. All calls block: the shadow service
runs them through ``asyncio.to_thread``. If the disk fails (full, read-only, I/O error) the
outbox keeps working in memory, says so in the log, and moves back to disk once writes succeed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.errors import GatewayError

log = structlog.get_logger()

RETRY_DISK_AFTER_S = 5.0
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


class OutboxError(GatewayError):
    """The outbox file cannot be opened at all (not a database, wrong permissions)."""


@dataclass(frozen=True)
class Change:
    """One accepted change of a device's value."""

    device: str
    value: Any
    observed_at: float
    event: bool = False  # also keep it as an event


@dataclass(frozen=True)
class Event:
    id: int
    device: str
    value: Any
    observed_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device,
            "value": self.value,
            "observed_at": self.observed_at,
        }


class _MemoryStore:
    """Where changes wait while the disk cannot take them."""

    def __init__(self) -> None:
        self.reported: dict[str, tuple[Any, float]] = {}
        self.events: list[Event] = []


class Outbox:
    """Thread-safe durable outbox; ``path=None`` keeps everything in memory (tests, no disk)."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_events: int = 100_000,
        max_bytes: int | None = None,
        sync: Literal["full", "normal"] = "full",
        monotonic: Any = time.monotonic,
    ) -> None:
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.sync = sync
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._memory = _MemoryStore()
        self._degraded_since: float | None = None
        self._last_id = 0  # newest event id handed out; ids are never reused
        self.dropped_events = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        if self.path is None:
            return
        try:
            self._db = self._connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc
        row = self._db.execute("SELECT value FROM counters WHERE name='dropped_events'").fetchone()
        self.dropped_events = int(row[0]) if row else 0
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._last_id = int(row[0]) if row else 0
        log.info("outbox_opened", path=str(self.path), **self.depth())

    def _connect(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut; NORMAL: survives a crash or kill -9 only.
        db.execute(f"PRAGMA synchronous={self.sync.upper()}")
        if self.max_bytes is not None:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={max(16, self.max_bytes // page_size)}")
        db.executescript(_SCHEMA)
        path.chmod(0o600)
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def degraded(self) -> bool:
        """True while changes are held in memory because the disk failed."""
        return self._degraded_since is not None

    # -- writing --------------------------------------------------------------------------------

    def record(self, changes: Sequence[Change]) -> None:
        """Make ``changes`` durable (one transaction); returns once they are safe."""
        with self._lock:
            self._maybe_recover()
            if self._db is not None and not self.degraded:
                try:
                    self._record_db(self._db, changes)
                    return
                except sqlite3.OperationalError as exc:
                    self._degrade(exc)
            self._record_memory(changes)

    def _record_db(self, db: sqlite3.Connection, changes: Sequence[Change]) -> None:
        with _transaction(db):
            for change in changes:
                text = json.dumps(change.value)
                db.execute(
                    "INSERT INTO reported(name, value, observed_at) VALUES(?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET value=excluded.value, "
                    "observed_at=excluded.observed_at",
                    (change.device, text, change.observed_at),
                )
                if change.event:
                    cursor = db.execute(
                        "INSERT INTO events(id, device, value, observed_at) VALUES(?,?,?,?)",
                        (self._last_id + 1, change.device, text, change.observed_at),
                    )
                    self._last_id = int(cursor.lastrowid or self._last_id + 1)
            self._enforce_bound_db(db)

    def _enforce_bound_db(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        excess = count - self.max_events
        if excess > 0:
            db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                (excess,),
            )
            self._count_dropped(excess, db)

    def _record_memory(self, changes: Sequence[Change]) -> None:
        memory = self._memory
        for change in changes:
            memory.reported[change.device] = (change.value, change.observed_at)
            if change.event:
                self._last_id += 1
                memory.events.append(
                    Event(self._last_id, change.device, change.value, change.observed_at)
                )
        excess = self._disk_event_count() + len(memory.events) - self.max_events
        if excess > 0:
            dropped = min(excess, len(memory.events))
            del memory.events[:dropped]
            self._count_dropped(dropped, None)

    def _disk_event_count(self) -> int:
        if self._db is None:
            return 0
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.DatabaseError:
            return 0

    def _count_dropped(self, count: int, db: sqlite3.Connection | None) -> None:
        self.dropped_events += count
        log.warning(
            "outbox_events_dropped",
            dropped=count,
            dropped_total=self.dropped_events,
            max_events=self.max_events,
        )
        if db is not None:
            db.execute(
                "INSERT INTO counters(name, value) VALUES('dropped_events', ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (self.dropped_events,),
            )

    def _degrade(self, exc: sqlite3.Error) -> None:
        if self._degraded_since is None:
            log.error(
                "outbox_disk_failed",
                path=str(self.path),
                error=str(exc),
                action="keeping changes in memory until the disk accepts writes again",
            )
        self._degraded_since = self._monotonic()

    def retry_disk(self) -> None:
        """While degraded, try moving what waits in memory back to disk (the writer's timer)."""
        with self._lock:
            self._maybe_recover()

    def _maybe_recover(self) -> None:
        """Move what waits in memory back to disk once writes succeed again."""
        if self._degraded_since is None or self._db is None:
            return
        if self._monotonic() - self._degraded_since < RETRY_DISK_AFTER_S:
            return
        memory = self._memory
        try:
            with _transaction(self._db):
                for name, (value, observed_at) in memory.reported.items():
                    self._db.execute(
                        "INSERT INTO reported(name, value, observed_at) VALUES(?,?,?) "
                        "ON CONFLICT(name) DO UPDATE SET value=excluded.value, "
                        "observed_at=excluded.observed_at",
                        (name, json.dumps(value), observed_at),
                    )
                for event in memory.events:  # same ids: a redelivery stays recognisable
                    self._db.execute(
                        "INSERT INTO events(id, device, value, observed_at) VALUES(?,?,?,?)",
                        (event.id, event.device, json.dumps(event.value), event.observed_at),
                    )
        except sqlite3.OperationalError:
            self._degraded_since = self._monotonic()
            return
        moved = len(memory.events)
        self._memory = _MemoryStore()
        self._degraded_since = None
        log.info("outbox_disk_recovered", path=str(self.path), events_moved=moved)

    # -- reading and acknowledging --------------------------------------------------------------

    def pending_reported(self) -> dict[str, tuple[Any, float]]:
        with self._lock:
            pending: dict[str, tuple[Any, float]] = {}
            if self._db is not None:
                for name, value, observed_at in self._safe_query(
                    "SELECT name, value, observed_at FROM reported"
                ):
                    pending[name] = (json.loads(value), observed_at)
            pending.update(self._memory.reported)
            return pending

    def ack_reported(self, delivered: dict[str, Any]) -> None:
        """Forget reported values the shadow accepted (unless a newer value replaced them)."""
        with self._lock:
            rows = []
            for name, value in delivered.items():
                # A value acked from memory is newer than whatever the disk holds for it.
                from_memory = self._memory.reported.get(name, (object(),))[0] == value
                if from_memory:
                    del self._memory.reported[name]
                rows.append((name, json.dumps(value), from_memory))
            if self._db is not None and rows:
                self._safe_write("DELETE FROM reported WHERE name=? AND (value=? OR ?)", rows)

    def next_events(self, limit: int) -> list[Event]:
        """The oldest undelivered events, in order (disk first: memory ones are newer)."""
        with self._lock:
            events = [
                Event(int(row[0]), row[1], json.loads(row[2]), row[3])
                for row in self._safe_query(
                    "SELECT id, device, value, observed_at FROM events ORDER BY id LIMIT ?",
                    (limit,),
                )
            ]
            if len(events) < limit:
                events += self._memory.events[: limit - len(events)]
            return events

    def ack_events(self, events: Iterable[Event]) -> None:
        """Delete events the broker acknowledged (PUBACK)."""
        ids = {event.id for event in events}
        with self._lock:
            self._memory.events = [e for e in self._memory.events if e.id not in ids]
            if ids and self._db is not None:
                self._safe_write("DELETE FROM events WHERE id=?", [(i,) for i in sorted(ids)])

    def depth(self) -> dict[str, int]:
        """How much is waiting: for status and metrics."""
        with self._lock:
            events = len(self._memory.events)
            reported = len(self._memory.reported)
            if self._db is not None:
                rows = self._safe_query(
                    "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM reported)"
                )
                for disk_events, disk_reported in rows:
                    events += int(disk_events)
                    reported += int(disk_reported)
            return {"events": events, "reported": reported, "dropped_events": self.dropped_events}

    def _safe_query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._db is None:
            return []  # in-memory outbox
        try:
            return list(self._db.execute(sql, params).fetchall())
        except sqlite3.DatabaseError as exc:
            self._degrade(exc)
            return []

    def _safe_write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert self._db is not None
        try:
            with _transaction(self._db):
                self._db.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            # A delete that fails only means a redelivery later (at least once), never a loss.
            log.warning("outbox_ack_not_stored", error=str(exc))


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


class OutboxWriter:
    """The one task that writes the outbox, so every accepted change is on disk before the
    gateway acts on it; it outlives shadow sessions and config reloads.

    ``accept`` is called on the loop thread; ``run`` persists in batches off the loop and then
    hands the changes to ``on_persisted`` (the current shadow's reporter).
    """

    def __init__(self, outbox: Outbox, on_persisted: Callable[[list[Change]], None]) -> None:
        self.outbox = outbox
        self._on_persisted = on_persisted
        self._intake: list[Change] = []
        self._delivered: dict[str, Any] = {}
        self._wake = asyncio.Event()

    def accept(self, change: Change) -> None:
        self._intake.append(change)
        self._wake.set()

    def delivered(self, batch: Mapping[str, Any]) -> None:
        """The shadow accepted these reported values: the outbox may forget them."""
        self._delivered.update(batch)
        self._wake.set()

    async def run(self) -> None:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(RETRY_DISK_AFTER_S):
                    await self._wake.wait()
            if not self._wake.is_set():
                # Changes may not come for hours: while the disk fails, retry it on a timer too.
                if self.outbox.degraded:
                    await asyncio.to_thread(self.outbox.retry_disk)
                continue
            self._wake.clear()
            changes, self._intake = self._intake, []
            delivered, self._delivered = self._delivered, {}
            if changes:
                await asyncio.to_thread(self.outbox.record, changes)
                self._on_persisted(changes)
            if delivered:
                await asyncio.to_thread(self.outbox.ack_reported, delivered)

    def drain(self) -> None:
        """On shutdown (blocking): store what is still waiting, so a clean stop loses nothing."""
        changes, self._intake = self._intake, []
        delivered, self._delivered = self._delivered, {}
        if changes:
            self.outbox.record(changes)
        if delivered:
            self.outbox.ack_reported(delivered)
