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

``Outbox`` decides between disk and memory and publishes the depth; ``OutboxWriter`` is the
task that feeds it. The parts they stand on live beside this module: ``outbox_file`` (the file
kept usable, corruption handled), ``outbox_store`` (the SQL of one open file and its row
counts), ``outbox_salvage`` (a damaged file moved aside and read), ``outbox_meta`` (event ids
and the meta file) and ``outbox_rows`` (``Change``, ``Event`` and decoding rows).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.core.outbox_file import OutboxFile
from gateway.core.outbox_rows import Change, Event, PendingReported
from gateway.core.outbox_salvage import Salvage

__all__ = ["RETRY_DISK_AFTER_S", "Change", "Event", "Outbox", "OutboxWriter"]

log = structlog.get_logger()

RETRY_DISK_AFTER_S = 5.0


class _MemoryStore:
    """Where changes wait while the disk cannot take them."""

    def __init__(self) -> None:
        self.reported: PendingReported = {}
        self.events: list[Event] = []

    def add_salvage(self, rescued: Salvage) -> None:
        """Rows salvaged from a corrupt file that no fresh file would take, merged in id order
        (a value already waiting here is newer than a salvaged one)."""
        for name, pending in rescued.reported.items():
            self.reported.setdefault(name, pending)
        self.events = sorted([*rescued.events, *self.events], key=lambda event: event.id)


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
        self._memory = _MemoryStore()
        self._degraded_since: float | None = None
        # Told (from whichever thread failed) when the disk starts failing: the writer's retry
        # timer runs only while degraded, so an idle healthy outbox never wakes anyone.
        self.on_degraded: Callable[[], None] | None = None
        self._file = OutboxFile(
            path,
            sync=sync,
            max_bytes=max_bytes,
            max_events=max_events,
            on_disk_failed=self._degrade,
            keep_in_memory=self._keep_salvaged,
        )
        self._published: dict[str, int] = self._depth()

    @property
    def dropped_events(self) -> int:
        """Events dropped by the bound (or unreadable), over the outbox's whole life."""
        return self._file.dropped_events

    @property
    def _db(self) -> sqlite3.Connection | None:
        """The open database's connection, if one is open."""
        return None if self._file.store is None else self._file.store.connection

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
            self._file.open()
            depth = self._depth()
            self._file.ids.write(depth)
        log.info("outbox_opened", path=str(self.path), **depth)

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
            self._file.close(self._depth())

    @property
    def degraded(self) -> bool:
        """True while changes are held in memory because the disk failed."""
        return self._degraded_since is not None

    @property
    def in_memory_entries(self) -> int:
        """Changes and events held in memory (for metrics; safe on the loop: two lengths)."""
        memory = self._memory
        return len(memory.events) + len(memory.reported)

    # -- writing --------------------------------------------------------------------------------

    def record(self, changes: Sequence[Change]) -> None:
        """Make ``changes`` durable (one transaction); returns once they are safe."""
        with self._locked():
            self._maybe_recover()
            for attempt in range(2):  # a corrupt file is replaced once, then tried again
                store = self._file.store
                if store is None or self.degraded:
                    break
                try:
                    store.record(changes, self._file.ids.next, self._count_dropped)
                    return
                except sqlite3.OperationalError as exc:
                    self._degrade(exc)
                except sqlite3.DatabaseError as exc:
                    self._file.corrupt_or_degrade(exc, attempt)
            self._record_memory(changes)

    def _record_memory(self, changes: Sequence[Change]) -> None:
        memory = self._memory
        for change in changes:
            memory.reported[change.device] = (change.value, change.observed_at)
            if change.event:
                event_id = self._file.ids.next()
                memory.events.append(
                    Event(event_id, change.device, change.value, change.observed_at)
                )
        excess = self._file.events + len(memory.events) - self.max_events
        if excess > 0:
            dropped = min(excess, len(memory.events))
            del memory.events[:dropped]
            self._count_dropped(dropped)

    def _count_dropped(self, count: int) -> int:
        """``count`` more events dropped by the bound: logged; the new total."""
        self._file.dropped_events += count
        log.warning(
            "outbox_events_dropped",
            dropped=count,
            dropped_total=self.dropped_events,
            max_events=self.max_events,
        )
        return self.dropped_events

    def _degrade(self, exc: sqlite3.Error | OSError) -> None:
        first = self._degraded_since is None
        if first:
            log.error(
                "outbox_disk_failed",
                path=str(self.path),
                error=str(exc),
                action="keeping changes in memory until the disk accepts writes again",
            )
        self._degraded_since = self._monotonic()
        if first and self.on_degraded is not None:
            self.on_degraded()  # after the flag: the writer it wakes must see it degraded

    def _keep_salvaged(self, rescued: Salvage) -> None:
        self._memory.add_salvage(rescued)  # the memory store in use now (recovery renews it)

    def retry_disk(self) -> None:
        """While degraded, try moving what waits in memory back to disk (the writer's timer)."""
        with self._locked():
            self._maybe_recover()

    def _maybe_recover(self) -> None:
        """Move what waits in memory back to disk once writes succeed again."""
        if self._degraded_since is None or self.path is None or self._file.abandoned:
            return
        if self._monotonic() - self._degraded_since < RETRY_DISK_AFTER_S:
            return
        memory = self._memory
        try:
            self._file.reopen().move_in(memory.reported, memory.events)
        except (sqlite3.OperationalError, OSError):
            self._degraded_since = self._monotonic()
            return
        except sqlite3.DatabaseError as exc:
            # What waits in memory moves into the fresh file at the next retry.
            self._file.replace_corrupt(exc)
            self._degraded_since = self._monotonic()
            return
        moved = len(memory.events)
        self._memory = _MemoryStore()
        self._degraded_since = None
        log.info("outbox_disk_recovered", path=str(self.path), events_moved=moved)

    # -- reading and acknowledging --------------------------------------------------------------

    def pending_reported(self) -> dict[str, tuple[Any, float]]:
        with self._locked():
            nothing: tuple[PendingReported, list[tuple[Any]]] = ({}, [])
            pending, unreadable = self._file.query(lambda s: s.pending_reported(), nothing)
            self._file.drop_unreadable("reported", unreadable)
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
                self._file.delete(lambda store: store.delete_reported(rows))

    def next_events(self, limit: int) -> list[Event]:
        """The oldest undelivered events, in order (disk first: memory ones are newer)."""
        with self._locked():
            nothing: tuple[list[Event], list[tuple[Any]]] = ([], [])
            events, unreadable = self._file.query(lambda s: s.next_events(limit), nothing)
            if unreadable:
                self._file.drop_unreadable("events", unreadable)
                self._file.dropped_events += len(unreadable)
            if len(events) < limit:
                events += self._memory.events[: limit - len(events)]
            return events

    def ack_events(self, events: Iterable[Event]) -> None:
        """Delete events the broker acknowledged (PUBACK)."""
        ids = {event.id for event in events}
        with self._locked():
            self._memory.events = [e for e in self._memory.events if e.id not in ids]
            if ids:
                self._file.delete(lambda store: store.delete_events(sorted(ids)))

    def depth(self) -> dict[str, int]:
        """How much is waiting, for status and metrics: the figures published when the lock was
        last released. Never waits for the writer and never queries SQLite (safe on the loop)."""
        return dict(self._published)

    def _depth(self) -> dict[str, int]:
        events = self._file.events + len(self._memory.events)
        reported = self._file.reported + len(self._memory.reported)
        return {"events": events, "reported": reported, "dropped_events": self.dropped_events}


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
        loop = asyncio.get_running_loop()

        def degraded() -> None:
            with suppress(RuntimeError):  # the loop is closing: nothing left to retry for
                loop.call_soon_threadsafe(self._wake.set)

        self.outbox.on_degraded = degraded
        try:
            await self._run()
        finally:
            self.outbox.on_degraded = None

    async def _run(self) -> None:
        while True:
            # The timer only while the disk fails: a healthy idle writer never wakes.
            retry_in = RETRY_DISK_AFTER_S if self.outbox.degraded else None
            with suppress(TimeoutError):
                async with asyncio.timeout(retry_in):
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
