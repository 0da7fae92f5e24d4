"""The outbox's database file kept usable, and the counters that outlive any one file.

``OutboxFile`` opens the file (an emptied one is moved aside first), and replaces a corrupt one
wherever the damage shows, at open or at a later read or write: moved aside, what it still
holds salvaged into a fresh file. Reads and deletes go through ``query`` and ``delete``, which
meet a damaged file the same way and a failing disk without raising. It keeps the event ids
(``outbox_meta``) and the count of dropped events, which carry on from file to file.

What a failure means for the changes themselves is the ``Outbox``'s decision: this class tells
it through two callbacks, ``on_disk_failed`` (keep changes in memory from now on) and
``keep_in_memory`` (salvaged rows no fresh file would take). All calls block and expect the
outbox's lock to be held.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from gateway.core.outbox_meta import EventIds, meta_path
from gateway.core.outbox_salvage import Salvage, is_emptied, move_aside, salvage
from gateway.core.outbox_store import OutboxDatabase

log = structlog.get_logger()

_T = TypeVar("_T")


class OutboxFile:
    """The database at ``path`` (``None``: there is none, nothing is written) and its counters."""

    def __init__(
        self,
        path: Path | None,
        *,
        sync: str,
        max_bytes: int | None,
        max_events: int,
        on_disk_failed: Callable[[sqlite3.Error | OSError], None],
        keep_in_memory: Callable[[Salvage], None],
    ) -> None:
        self.path = path
        self._sync = sync
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._on_disk_failed = on_disk_failed
        self._keep_in_memory = keep_in_memory
        self.store: OutboxDatabase | None = None  # the open database, if any
        self.ids = EventIds(None if path is None else meta_path(path))
        self.dropped_events = 0  # by the bound or unreadable, since the first file was made
        self.abandoned = False  # a corrupt file could not be moved aside: memory only

    @property
    def events(self) -> int:
        """Events in the open file (0 when none is open)."""
        return 0 if self.store is None else self.store.events

    @property
    def reported(self) -> int:
        """Reported values in the open file (0 when none is open)."""
        return 0 if self.store is None else self.store.reported

    # -- opening and closing --------------------------------------------------------------------

    def open(self) -> None:
        """Open the file; a corrupt or emptied one is moved aside and replaced, a failing disk
        is reported to ``on_disk_failed``: neither raises."""
        assert self.path is not None
        self.ids.load()
        try:
            if is_emptied(self.path):
                self._replace_emptied(self.path)
            self.store = self._open_store(self.path)
        except sqlite3.OperationalError as exc:
            self._on_disk_failed(exc)
        except sqlite3.DatabaseError as exc:
            self.replace_corrupt(exc)
        except OSError as exc:  # the state dir itself (permissions, read-only)
            self._on_disk_failed(exc)

    def reopen(self) -> OutboxDatabase:
        """The open database, opening the file if it could not be opened so far (raises)."""
        assert self.path is not None
        if self.store is None:
            self.store = self._open_store(self.path)
        return self.store

    def _open_store(self, path: Path) -> OutboxDatabase:
        """Open and check the file; the counters it kept carry on here."""
        store = OutboxDatabase.open(
            path, sync=self._sync, max_bytes=self._max_bytes, max_events=self._max_events
        )
        self.dropped_events = max(self.dropped_events, store.dropped_at_open)
        self.ids.database_opened(store.last_id_at_open, fresh=store.fresh)
        return store

    def close(self, depth: dict[str, int]) -> None:
        """Record ``depth`` and the ids in the meta file, and close the database."""
        if self.path is not None and not self.abandoned:
            self.ids.write(depth)
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- a corrupt or emptied file --------------------------------------------------------------

    def replace_corrupt(self, exc: sqlite3.Error) -> None:
        """Move the corrupt file aside, salvage what it still holds into a fresh one.

        If even that fails the outbox stays in memory: the gateway keeps going either way."""
        assert self.path is not None
        if self.store is not None:
            with suppress(sqlite3.Error):
                self.store.close()
            self.store = None
        try:
            aside = move_aside(self.path)
        except OSError as move_exc:
            self.abandoned = True  # retrying would salvage the same rows again
            log.error(
                "outbox_corrupt_not_moved",
                path=str(self.path),
                error=str(exc),
                move_error=str(move_exc),
                action="keeping changes in memory until the gateway restarts",
            )
            self._on_disk_failed(move_exc)
            return
        rescued = salvage(aside)
        self.ids.seen(rescued.last_id)
        self.ids.continue_after_reserved()
        self.dropped_events = max(self.dropped_events, rescued.dropped_events)
        log.error(
            "outbox_corrupt_moved_aside",
            path=str(self.path),
            moved_to=str(aside),
            error=str(exc),
            events_salvaged=len(rescued.events),
            reported_salvaged=len(rescued.reported),
            # Pending ids form one range (delivery and the bound delete the oldest first), so
            # ids missing inside the salvaged range were pending and are lost; more may be.
            events_lost_at_least=rescued.missing_in_range,
            complete=rescued.complete,
            next_event_id=self.ids.last + 1,
        )
        store = None
        try:
            store = self._open_store(self.path)
            store.store_salvage(rescued, last_id=self.ids.last, dropped_events=self.dropped_events)
        except (sqlite3.Error, OSError) as fresh_exc:
            if store is not None:
                with suppress(sqlite3.Error):
                    store.close()
            self._keep_in_memory(rescued)
            self._on_disk_failed(fresh_exc)
            return
        self.store = store

    def _replace_emptied(self, path: Path) -> None:
        """A zero-length file where a database was: SQLite would take it for a new, empty
        outbox, and whatever was pending would vanish without a word."""
        aside = move_aside(path)
        self.ids.continue_after_reserved()
        log.error(
            "outbox_empty_file_replaced",
            path=str(path),
            moved_to=str(aside),
            last_known_depth=self.ids.meta.depth,
            last_known_at=self.ids.meta.at,
            lost="whatever was pending when the file was emptied (cannot be known)",
        )

    def corrupt_or_degrade(self, exc: sqlite3.DatabaseError, attempt: int) -> None:
        """The first corruption error replaces the file; one from the fresh file is the disk's."""
        if attempt == 0:
            self.replace_corrupt(exc)
        else:
            self._on_disk_failed(exc)

    # -- guarded reads and deletes --------------------------------------------------------------

    def query(self, read: Callable[[OutboxDatabase], _T], empty: _T) -> _T:
        """``read`` from the open file; ``empty`` if there is none or the disk fails (a corrupt
        file is replaced and read once more)."""
        for attempt in range(2):
            if self.store is None:
                return empty  # in memory
            try:
                return read(self.store)
            except sqlite3.OperationalError as exc:
                self._on_disk_failed(exc)
                return empty
            except sqlite3.DatabaseError as exc:
                self.corrupt_or_degrade(exc, attempt)
        return empty

    def delete(self, delete: Callable[[OutboxDatabase], int]) -> int:
        """Run ``delete`` on the open file; the rows it deleted (0 when it could not)."""
        for attempt in range(2):
            if self.store is None:
                return 0
            try:
                return delete(self.store)
            except sqlite3.OperationalError as exc:
                # A delete that fails only means a redelivery later (at least once), never a
                # loss.
                log.warning("outbox_ack_not_stored", error=str(exc))
                return 0
            except sqlite3.DatabaseError as exc:
                self.corrupt_or_degrade(exc, attempt)
        return 0

    def drop_unreadable(
        self, table: Literal["events", "reported"], rowids: list[tuple[Any]]
    ) -> None:
        """Rows whose content no longer decodes (bytes changed inside a value) would stay at
        the head of the queue forever: they are deleted, counted and logged."""
        if not rowids:
            return
        log.error("outbox_rows_unreadable", table=table, rows=len(rowids))
        self.delete(lambda store: store.delete_rows(table, rowids))
