"""The durable outbox: accepted changes survive crashes, kill -9 and power cuts until delivered.

SQLite in WAL mode (stdlib ``sqlite3``: one file, atomic commits, no server; on a Pi's SD card
it is the most battle-tested embedded store there is). Two tables:

- ``reported``: the last accepted value per shadow key (coalesced: last value wins);
- ``events``: every change of a device with ``events: true``, in order, with its observation
  time and an id that is never reused, bounded by ``max_events`` (oldest dropped, counted).

Rows are deleted only once the broker acknowledged them. All calls block (the shadow service
runs them through ``asyncio.to_thread``) except ``depth()``: the outbox counts the rows its own
writes add and delete, so status and a metrics scrape read the cached figures on the event loop
without waiting for the writer's lock or querying SQLite. If the disk fails (full, read-only,
I/O error) the outbox keeps working in memory, says so in the log, and moves back to disk once
writes succeed.

A corrupt file (any ``sqlite3.DatabaseError`` that is not the disk's ``OperationalError``, at
open or later, or a failed ``quick_check`` at open) never stops the gateway: the file and its
``-wal``/``-shm`` are moved aside as ``outbox.sqlite3.corrupt-<UTC time>`` (kept for
inspection), whatever rows can still be read from a copy are carried into a fresh file, and
``outbox_corrupt_moved_aside`` says how many. A file found empty where a database was is moved
aside the same way (``outbox_empty_file_replaced``, with the depth last recorded).

Event ids are reserved ahead in blocks in ``outbox.sqlite3.meta.json`` (written atomically, with
the depth at the last open and close), so an id stays unused even when the file that counted
them is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.core.atomicfile import write_atomic
from gateway.errors import GatewayError

log = structlog.get_logger()

RETRY_DISK_AFTER_S = 5.0
ID_BLOCK = 1000  # event ids reserved per write of the meta file
MAX_META_BYTES = 4096
_SQLITE_FILES = ("", "-wal", "-shm")  # a database in WAL mode is these three files
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
        self._ids_reserved = 0  # ids up to this one are promised by the meta file
        self._meta: _Meta = _Meta()
        self._abandoned = False  # a corrupt file could not be moved aside: memory only
        self._ids_known = False  # a database told the newest id (else: after the reserved ones)
        self.dropped_events = 0
        # Rows in the open database, kept exact by every write of ours (counted at open).
        self._disk_events = 0
        self._disk_reported = 0
        self._published: dict[str, int] = self._depth()

    # -- lifecycle ------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The writer's lock; on release the depth figures are published for ``depth()``."""
        with self._lock:
            try:
                yield
            finally:
                self._published = self._depth()

    def open(self) -> None:
        """Open the file; a corrupt or emptied one is moved aside and replaced, a failing disk
        leaves the outbox in memory (retried like a full disk): neither stops the gateway."""
        if self.path is None:
            return
        with self._locked():
            self._meta = _read_meta(_meta_path(self.path))
            self._ids_reserved = self._meta.event_ids_reserved
            try:
                if _is_emptied(self.path):
                    self._replace_emptied(self.path)
                self._db = self._open_db(self.path)
            except sqlite3.OperationalError as exc:
                self._degrade(exc)
            except sqlite3.DatabaseError as exc:
                self._replace_corrupt(exc)
            except OSError as exc:  # the state dir itself (permissions, read-only)
                self._degrade(exc)
            depth = self._depth()
            self._write_meta(depth)
        log.info("outbox_opened", path=str(self.path), **depth)

    def _open_db(self, path: Path) -> sqlite3.Connection:
        """Connect, check the file's structure and load the counters."""
        fresh = not path.exists()
        db = self._connect(path)
        try:
            (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            row = db.execute("SELECT value FROM counters WHERE name='dropped_events'").fetchone()
            self.dropped_events = max(self.dropped_events, int(row[0]) if row else 0)
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
            events, reported = self._count_rows(db)
        except BaseException:
            db.close()
            raise
        self._disk_events, self._disk_reported = events, reported
        self._last_id = max(self._last_id, int(row[0]) if row else 0)
        if fresh and not self._ids_known:
            # Whatever counted the ids before is gone: continue after the reserved ones.
            self._last_id = max(self._last_id, self._ids_reserved)
        self._ids_known = True
        return db

    @staticmethod
    def _count_rows(db: sqlite3.Connection) -> tuple[int, int]:
        """Events and reported rows in ``db``: counted only when a database is (re)opened or
        filled by a salvage; afterwards every write of ours keeps the figures exact."""
        events, reported = db.execute(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM reported)"
        ).fetchone()
        return int(events), int(reported)

    def _connect(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives a power cut; NORMAL: survives a crash or kill -9 only.
            db.execute(f"PRAGMA synchronous={self.sync.upper()}")
            if self.max_bytes is not None:
                page_size = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={max(16, self.max_bytes // page_size)}")
            db.executescript(_SCHEMA)
            path.chmod(0o600)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._locked():
            memory = self._memory
            if self.path is not None and (memory.events or memory.reported):
                # The disk never came back: say what this stop loses instead of losing it quietly.
                log.error(
                    "outbox_memory_lost_at_stop",
                    path=str(self.path),
                    events=len(memory.events),
                    reported=len(memory.reported),
                )
            if self.path is not None and not self._abandoned:
                self._write_meta(self._depth())
            if self._db is not None:
                self._db.close()
                self._db = None
                self._disk_events = self._disk_reported = 0

    # -- a corrupt or emptied file --------------------------------------------------------------

    def _replace_corrupt(self, exc: sqlite3.Error) -> None:
        """Move the corrupt file aside, salvage what it still holds into a fresh one (lock held).

        If even that fails the outbox stays in memory: the gateway keeps going either way."""
        assert self.path is not None
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._disk_events = self._disk_reported = 0
        try:
            aside = _move_aside(self.path)
        except OSError as move_exc:
            self._abandoned = True  # retrying would salvage the same rows again
            log.error(
                "outbox_corrupt_not_moved",
                path=str(self.path),
                error=str(exc),
                move_error=str(move_exc),
                action="keeping changes in memory until the gateway restarts",
            )
            self._degrade(move_exc)
            return
        salvage = _salvage(aside)
        self._last_id = max(self._last_id, salvage.last_id)
        if not self._ids_known:
            self._last_id = max(self._last_id, self._ids_reserved)
        self.dropped_events = max(self.dropped_events, salvage.dropped_events)
        log.error(
            "outbox_corrupt_moved_aside",
            path=str(self.path),
            moved_to=str(aside),
            error=str(exc),
            events_salvaged=len(salvage.events),
            reported_salvaged=len(salvage.reported),
            # Pending ids form one range (delivery and the bound delete the oldest first), so
            # ids missing inside the salvaged range were pending and are lost; more may be.
            events_lost_at_least=salvage.missing_in_range,
            complete=salvage.complete,
            next_event_id=self._last_id + 1,
        )
        try:
            db = self._open_db(self.path)
            with _transaction(db):
                self._store_salvage(db, salvage)
            self._disk_events, self._disk_reported = self._count_rows(db)
        except (sqlite3.Error, OSError) as fresh_exc:
            self._disk_events = self._disk_reported = 0
            for name, pending in salvage.reported.items():
                self._memory.reported.setdefault(name, pending)
            self._memory.events = sorted(
                [*salvage.events, *self._memory.events], key=lambda event: event.id
            )
            self._degrade(fresh_exc)
            return
        self._db = db

    def _store_salvage(self, db: sqlite3.Connection, salvage: _Salvage) -> None:
        for name, (value, observed_at) in salvage.reported.items():
            self._upsert_reported(db, name, json.dumps(value), observed_at)
        for event in salvage.events:  # same ids: a redelivery stays recognisable
            db.execute(
                "INSERT OR IGNORE INTO events(id, device, value, observed_at) VALUES(?,?,?,?)",
                (event.id, event.device, json.dumps(event.value), event.observed_at),
            )
        # The next open counts on from here, not from the highest id that was salvaged.
        seq = (self._last_id,)
        if db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='events'", seq).rowcount == 0:
            db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES('events', ?)", seq)
        if self.dropped_events:
            self._store_dropped(db)

    def _replace_emptied(self, path: Path) -> None:
        """A zero-length file where a database was: SQLite would take it for a new, empty
        outbox, and whatever was pending would vanish without a word."""
        aside = _move_aside(path)
        if not self._ids_known:
            self._last_id = max(self._last_id, self._ids_reserved)
        log.error(
            "outbox_empty_file_replaced",
            path=str(path),
            moved_to=str(aside),
            last_known_depth=self._meta.depth,
            last_known_at=self._meta.at,
            lost="whatever was pending when the file was emptied (cannot be known)",
        )

    # -- event ids and the meta file ------------------------------------------------------------

    def _next_id(self) -> int:
        self._last_id += 1
        if self._last_id > self._ids_reserved and self.path is not None:
            self._ids_reserved = self._last_id + ID_BLOCK
            self._write_meta(self._meta.depth, at=self._meta.at)
        return self._last_id

    def _write_meta(self, depth: dict[str, int] | None, *, at: float | None = None) -> None:
        assert self.path is not None
        self._ids_reserved = max(self._ids_reserved, self._last_id)
        self._meta = _Meta(self._ids_reserved, depth, time.time() if at is None else at)
        try:
            write_atomic(_meta_path(self.path), self._meta.to_json(), 0o600)
        except GatewayError as exc:  # the reservation then only lives in this process
            log.warning("outbox_meta_not_written", error=str(exc))

    @property
    def degraded(self) -> bool:
        """True while changes are held in memory because the disk failed."""
        return self._degraded_since is not None

    # -- writing --------------------------------------------------------------------------------

    def record(self, changes: Sequence[Change]) -> None:
        """Make ``changes`` durable (one transaction); returns once they are safe."""
        with self._locked():
            self._maybe_recover()
            for attempt in range(2):  # a corrupt file is replaced once, then tried again
                if self._db is None or self.degraded:
                    break
                try:
                    self._record_db(self._db, changes)
                    return
                except sqlite3.OperationalError as exc:
                    self._degrade(exc)
                except sqlite3.DatabaseError as exc:
                    self._corrupt_or_degrade(exc, attempt)
            self._record_memory(changes)

    def _corrupt_or_degrade(self, exc: sqlite3.DatabaseError, attempt: int) -> None:
        """The first corruption error replaces the file; one from the fresh file is the disk's."""
        if attempt == 0:
            self._replace_corrupt(exc)
        else:
            self._degrade(exc)

    def _record_db(self, db: sqlite3.Connection, changes: Sequence[Change]) -> None:
        # The counts change only once the transaction committed.
        reported = self._disk_reported
        with _transaction(db):
            for change in changes:
                text = json.dumps(change.value)
                reported += self._upsert_reported(db, change.device, text, change.observed_at)
                if change.event:
                    db.execute(
                        "INSERT INTO events(id, device, value, observed_at) VALUES(?,?,?,?)",
                        (self._next_id(), change.device, text, change.observed_at),
                    )
            events = self._enforce_bound_db(db)
        self._disk_events, self._disk_reported = events, reported

    @staticmethod
    def _upsert_reported(db: sqlite3.Connection, name: str, text: str, observed_at: float) -> int:
        """Store the value of ``name``; 1 if that added a row, 0 if it replaced one."""
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

    def _enforce_bound_db(self, db: sqlite3.Connection) -> int:
        """Delete the oldest events beyond the bound; the events stored afterwards. (Counting
        here, in the writer's thread, also meets a corrupt page at the write, not later.)"""
        (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        excess = count - self.max_events
        if excess <= 0:
            return int(count)
        db.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
            (excess,),
        )
        self._count_dropped(excess, db)
        return self.max_events

    def _record_memory(self, changes: Sequence[Change]) -> None:
        memory = self._memory
        for change in changes:
            memory.reported[change.device] = (change.value, change.observed_at)
            if change.event:
                memory.events.append(
                    Event(self._next_id(), change.device, change.value, change.observed_at)
                )
        excess = self._disk_events + len(memory.events) - self.max_events
        if excess > 0:
            dropped = min(excess, len(memory.events))
            del memory.events[:dropped]
            self._count_dropped(dropped, None)

    def _count_dropped(self, count: int, db: sqlite3.Connection | None) -> None:
        self.dropped_events += count
        log.warning(
            "outbox_events_dropped",
            dropped=count,
            dropped_total=self.dropped_events,
            max_events=self.max_events,
        )
        if db is not None:
            self._store_dropped(db)

    def _store_dropped(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO counters(name, value) VALUES('dropped_events', ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (self.dropped_events,),
        )

    def _degrade(self, exc: sqlite3.Error | OSError) -> None:
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
        with self._locked():
            self._maybe_recover()

    def _maybe_recover(self) -> None:
        """Move what waits in memory back to disk once writes succeed again."""
        if self._degraded_since is None or self.path is None or self._abandoned:
            return
        if self._monotonic() - self._degraded_since < RETRY_DISK_AFTER_S:
            return
        memory = self._memory
        try:
            if self._db is None:  # the file could not be opened at all so far
                self._db = self._open_db(self.path)
            reported = self._disk_reported
            with _transaction(self._db):
                for name, (value, observed_at) in memory.reported.items():
                    reported += self._upsert_reported(
                        self._db, name, json.dumps(value), observed_at
                    )
                for event in memory.events:  # same ids: a redelivery stays recognisable
                    self._db.execute(
                        "INSERT INTO events(id, device, value, observed_at) VALUES(?,?,?,?)",
                        (event.id, event.device, json.dumps(event.value), event.observed_at),
                    )
            self._disk_events += len(memory.events)
            self._disk_reported = reported
        except (sqlite3.OperationalError, OSError):
            self._degraded_since = self._monotonic()
            return
        except sqlite3.DatabaseError as exc:
            self._replace_corrupt(exc)  # memory moves into the fresh file at the next retry
            self._degraded_since = self._monotonic()
            return
        moved = len(memory.events)
        self._memory = _MemoryStore()
        self._degraded_since = None
        log.info("outbox_disk_recovered", path=str(self.path), events_moved=moved)

    # -- reading and acknowledging --------------------------------------------------------------

    def pending_reported(self) -> dict[str, tuple[Any, float]]:
        with self._locked():
            pending: dict[str, tuple[Any, float]] = {}
            unreadable = []
            for row in self._safe_query(_SELECT_REPORTED):
                item = _reported_from_row(row)
                if item is None:
                    unreadable.append((row[0],))
                else:
                    pending[item[0]] = item[1]
            self._drop_unreadable("reported", unreadable)
            pending.update(self._memory.reported)
            return pending

    def ack_reported(self, delivered: dict[str, Any]) -> None:
        """Forget reported values the shadow accepted (unless a newer value replaced them)."""
        with self._locked():
            rows = []
            for name, value in delivered.items():
                # A value acked from memory is newer than whatever the disk holds for it.
                from_memory = self._memory.reported.get(name, (object(),))[0] == value
                if from_memory:
                    del self._memory.reported[name]
                rows.append((name, json.dumps(value), from_memory))
            if rows:
                sql = "DELETE FROM reported WHERE name=? AND (value=? OR ?)"
                self._disk_reported -= self._safe_write(sql, rows)

    def next_events(self, limit: int) -> list[Event]:
        """The oldest undelivered events, in order (disk first: memory ones are newer)."""
        with self._locked():
            events = []
            unreadable = []
            for row in self._safe_query(f"{_SELECT_EVENTS} ORDER BY id LIMIT ?", (limit,)):
                event = _event_from_row(row)
                if event is None:
                    unreadable.append((row[0],))
                else:
                    events.append(event)
            if unreadable:
                self._drop_unreadable("events", unreadable)
                self.dropped_events += len(unreadable)
            if len(events) < limit:
                events += self._memory.events[: limit - len(events)]
            return events

    def ack_events(self, events: Iterable[Event]) -> None:
        """Delete events the broker acknowledged (PUBACK)."""
        ids = {event.id for event in events}
        with self._locked():
            self._memory.events = [e for e in self._memory.events if e.id not in ids]
            if ids:
                rows = [(i,) for i in sorted(ids)]
                self._disk_events -= self._safe_write("DELETE FROM events WHERE id=?", rows)

    def depth(self) -> dict[str, int]:
        """How much is waiting, for status and metrics: the figures published when the lock was
        last released. Never waits for the writer and never queries SQLite (safe on the loop)."""
        return dict(self._published)

    def _depth(self) -> dict[str, int]:
        events = self._disk_events + len(self._memory.events)
        reported = self._disk_reported + len(self._memory.reported)
        return {"events": events, "reported": reported, "dropped_events": self.dropped_events}

    def _safe_query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in range(2):
            if self._db is None:
                return []  # in memory
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.OperationalError as exc:
                self._degrade(exc)
                return []
            except sqlite3.DatabaseError as exc:
                self._corrupt_or_degrade(exc, attempt)
        return []

    def _safe_write(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """Run a delete for each of ``rows`` in one transaction; the rows it deleted."""
        for attempt in range(2):
            if self._db is None:
                return 0
            try:
                with _transaction(self._db):
                    deleted = self._db.executemany(sql, rows).rowcount
                return max(deleted, 0)
            except sqlite3.OperationalError as exc:
                # A delete that fails only means a redelivery later (at least once), never a
                # loss.
                log.warning("outbox_ack_not_stored", error=str(exc))
                return 0
            except sqlite3.DatabaseError as exc:
                self._corrupt_or_degrade(exc, attempt)
        return 0

    def _drop_unreadable(
        self, table: Literal["events", "reported"], rowids: list[tuple[Any]]
    ) -> None:
        """Rows whose content no longer decodes (bytes changed inside a value) would stay at
        the head of the queue forever: they are deleted, counted and logged."""
        if not rowids:
            return
        log.error("outbox_rows_unreadable", table=table, rows=len(rowids))
        deleted = self._safe_write(f"DELETE FROM {table} WHERE rowid=?", rowids)
        if table == "events":
            self._disk_events -= deleted
        else:
            self._disk_reported -= deleted


# Text is read as bytes and decoded here: a value whose bytes were changed on disk is then one
# unreadable row, not an error from the sqlite3 module that would hide every row.
_SELECT_EVENTS = "SELECT id, CAST(device AS BLOB), CAST(value AS BLOB), observed_at FROM events"
_SELECT_REPORTED = (
    "SELECT rowid, CAST(name AS BLOB), CAST(value AS BLOB), observed_at FROM reported"
)


def _decode_value(raw: Any) -> tuple[bool, Any]:
    if not isinstance(raw, bytes):
        return False, None
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


def _decode_text(raw: Any) -> str | None:
    if not isinstance(raw, bytes):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _event_from_row(row: tuple[Any, ...]) -> Event | None:
    event_id, device, raw, observed_at = row
    ok, value = _decode_value(raw)
    name = _decode_text(device)
    if not ok or name is None or not isinstance(event_id, int):
        return None
    if not isinstance(observed_at, int | float):
        return None
    return Event(event_id, name, value, float(observed_at))


def _reported_from_row(row: tuple[Any, ...]) -> tuple[str, tuple[Any, float]] | None:
    _rowid, raw_name, raw, observed_at = row
    ok, value = _decode_value(raw)
    name = _decode_text(raw_name)
    if not ok or name is None or not isinstance(observed_at, int | float):
        return None
    return name, (value, float(observed_at))


@dataclass(frozen=True)
class _Meta:
    """What the outbox keeps beside its database: reserved event ids, the last known depth."""

    event_ids_reserved: int = 0
    depth: dict[str, int] | None = None
    at: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {"event_ids_reserved": self.event_ids_reserved, "depth": self.depth, "at": self.at}
        ).encode()


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _read_meta(path: Path) -> _Meta:
    try:
        with path.open("rb") as stream:
            data = json.loads(stream.read(MAX_META_BYTES))
    except FileNotFoundError:
        return _Meta()
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("outbox_meta_unreadable", path=str(path), error=type(exc).__name__)
        return _Meta()
    if not isinstance(data, dict):
        return _Meta()
    reserved = data.get("event_ids_reserved")
    depth = data.get("depth")
    at = data.get("at")
    return _Meta(
        reserved if isinstance(reserved, int) and not isinstance(reserved, bool) else 0,
        {str(k): v for k, v in depth.items() if isinstance(v, int)}
        if isinstance(depth, dict)
        else None,
        float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
    )


def _is_emptied(path: Path) -> bool:
    """Zero bytes where a database was (an empty -wal too): not a new file, a lost one."""
    try:
        if path.stat().st_size != 0:
            return False
    except FileNotFoundError:
        return False
    wal = Path(f"{path}-wal")
    return not wal.exists() or wal.stat().st_size == 0


def _move_aside(path: Path) -> Path:
    """Rename the database (and its -wal and -shm) to ``<name>.corrupt-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in _SQLITE_FILES):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in _SQLITE_FILES:
        with suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


@dataclass(frozen=True)
class _Salvage:
    reported: dict[str, tuple[Any, float]]
    events: list[Event]
    last_id: int
    dropped_events: int
    complete: bool  # every row of both tables was read

    @property
    def missing_in_range(self) -> int:
        if not self.events:
            return 0
        return self.events[-1].id - self.events[0].id + 1 - len(self.events)


def _salvage(aside: Path) -> _Salvage:
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
        return _Salvage({}, [], 0, 0, complete=False)
    try:
        event_rows, events_complete = _scan(db, _SELECT_EVENTS, "id")
        reported_rows, reported_complete = _scan(db, _SELECT_REPORTED, "rowid")
        last_id = _best_effort_int(db, "SELECT seq FROM sqlite_sequence WHERE name='events'")
        dropped = _best_effort_int(db, "SELECT value FROM counters WHERE name='dropped_events'")
    finally:
        with suppress(sqlite3.Error):
            db.close()
        _remove(scratch)
    events = sorted(
        (event for row in event_rows if (event := _event_from_row(row)) is not None),
        key=lambda event: event.id,
    )
    reported = dict(item for row in reported_rows if (item := _reported_from_row(row)))
    readable = len(events) == len(event_rows) and len(reported) == len(reported_rows)
    return _Salvage(
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
    for suffix in _SQLITE_FILES:
        Path(f"{scratch}{suffix}").unlink(missing_ok=True)


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
