"""The outbox's parts: the cached depth after corruption met at an ack, the event ids and the
meta file, and the shadow link's start reading the outbox off the event loop."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from pathlib import Path

from structlog.testing import capture_logs

from gateway.core.outbox import Change, Outbox
from gateway.core.outbox_meta import ID_BLOCK, EventIds, meta_path, read_meta


def counted(path: Path) -> dict[str, int]:
    """The depth as the file itself says (a separate connection)."""
    db = sqlite3.connect(path)
    try:
        events, reported = db.execute(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM reported)"
        ).fetchone()
    finally:
        db.close()
    return {"events": events, "reported": reported}


def corrupt_oldest_events(outbox: Outbox, path: Path) -> None:
    """Overwrite the first page holding event rows while ``outbox`` has the file open."""
    assert outbox._db is not None
    outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    pages = [n for n in range(1, len(data) // 4096) if b"button" in data[n * 4096 : (n + 1) * 4096]]
    start = pages[2] * 4096
    data[start : start + 4096] = random.Random(2).randbytes(4096)
    path.write_bytes(bytes(data))
    other = sqlite3.connect(path, isolation_level=None)  # a commit elsewhere empties our cache
    other.execute("INSERT INTO counters(name, value) VALUES('x', 1)")
    other.close()


def test_cached_depth_after_corruption_met_while_acking_events(tmp_path: Path) -> None:
    """Was: the ack subtracted what the fresh file deleted from the count of the corrupt one,
    so status showed events the salvage had lost until the next restart."""
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", n % 2 == 0, float(n), event=True) for n in range(400)])
    oldest = outbox.next_events(1)
    corrupt_oldest_events(outbox, path)
    with capture_logs() as logs:
        outbox.ack_events(oldest)
    assert any(entry["event"] == "outbox_corrupt_moved_aside" for entry in logs)
    waiting = len(outbox.next_events(10**6))
    assert 150 < waiting < 400
    assert outbox.depth()["events"] == waiting == counted(path)["events"]
    outbox.close()


def test_event_ids_reserve_a_block_ahead_and_a_lost_database_continues_after_it(
    tmp_path: Path,
) -> None:
    meta = meta_path(tmp_path / "outbox.db")
    ids = EventIds(meta)
    ids.load()
    ids.database_opened(0, fresh=True)
    assert [ids.next() for _ in range(3)] == [1, 2, 3]
    assert read_meta(meta).event_ids_reserved == 1 + ID_BLOCK  # written before id 1 went out
    restarted = EventIds(meta)
    restarted.load()
    restarted.database_opened(0, fresh=True)  # the database that counted to 3 is gone
    assert restarted.next() == 2 + ID_BLOCK


def test_event_ids_follow_the_database_that_counted_them(tmp_path: Path) -> None:
    ids = EventIds(meta_path(tmp_path / "outbox.db"))
    ids.load()
    ids.database_opened(41, fresh=False)
    ids.continue_after_reserved()  # known now: a later replacement does not skip ahead
    assert ids.next() == 42


def test_an_unreadable_meta_file_reads_as_unknown(tmp_path: Path) -> None:
    meta = meta_path(tmp_path / "outbox.db")
    meta.write_text('{"event_ids_reserved": true, "depth": {"events": "x"}, "at": "now"}')
    assert read_meta(meta).event_ids_reserved == 0
    assert read_meta(meta).depth == {} and read_meta(meta).at is None
    meta.write_bytes(b"\xff" * 10)
    with capture_logs() as logs:
        assert read_meta(meta).event_ids_reserved == 0
    assert [entry["event"] for entry in logs] == ["outbox_meta_unreadable"]


def test_an_outbox_in_memory_hands_out_ids_without_a_meta_file(tmp_path: Path) -> None:
    outbox = Outbox(None)
    outbox.open()
    outbox.record([Change("button", n, float(n), event=True) for n in range(3)])
    assert [event.id for event in outbox.next_events(10)] == [1, 2, 3]
    outbox.close()
    assert list(tmp_path.iterdir()) == []


async def test_the_shadow_link_reads_the_outbox_at_start_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """Was: Reporter.recover ran the SQLite read on the loop, which waited for the writer."""
    from gateway.links.shadow.report import Reporter

    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record([Change("led", True, 1.0)])
    reporter = Reporter(lambda: 0.0)
    loop_thread = threading.get_ident()
    readers: list[int] = []
    read = outbox.pending_reported

    def pending_reported() -> dict[str, tuple[object, float]]:
        readers.append(threading.get_ident())
        return read()

    outbox.pending_reported = pending_reported  # type: ignore[method-assign]
    await asyncio.wait_for(reporter.recover(outbox), timeout=5.0)
    assert readers and readers[0] != loop_thread
    assert reporter.pending
    outbox.close()
