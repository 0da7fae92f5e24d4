"""The durable outbox: nothing accepted is lost by crashes, restarts or a full disk."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from structlog.testing import capture_logs

from gateway.core.outbox import Change, Outbox, OutboxWriter


def events_of(outbox: Outbox) -> list[tuple[str, Any]]:
    return [(event.device, event.value) for event in outbox.next_events(10**6)]


def test_events_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record(
        [Change("button", True, 1.0, event=True), Change("button", False, 2.0, event=True)]
    )
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.db")
    reopened.open()
    assert events_of(reopened) == [("button", True), ("button", False)]


def test_acknowledged_events_are_deleted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record([Change("b", n, float(n), event=True) for n in range(5)])
    outbox.ack_events(outbox.next_events(3))
    assert [value for _, value in events_of(outbox)] == [3, 4]


def test_event_ids_are_never_reused_across_restarts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record([Change("b", 1, 1.0, event=True)])
    first = outbox.next_events(1)[0].id
    outbox.ack_events(outbox.next_events(1))
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.db")
    reopened.open()
    reopened.record([Change("b", 2, 2.0, event=True)])
    assert reopened.next_events(1)[0].id > first


def test_reported_values_coalesce_to_the_last_per_key(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record([Change("cpu", 40.0, 1.0), Change("cpu", 41.0, 2.0), Change("led", True, 3.0)])
    assert outbox.pending_reported() == {"cpu": (41.0, 2.0), "led": (True, 3.0)}
    assert events_of(outbox) == []


def test_ack_of_a_superseded_reported_value_keeps_the_newer_one(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record([Change("cpu", 40.0, 1.0)])
    outbox.record([Change("cpu", 41.0, 2.0)])
    outbox.ack_reported({"cpu": 40.0})
    assert outbox.pending_reported() == {"cpu": (41.0, 2.0)}


def test_bound_drops_the_oldest_events_with_a_counted_warning(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_events=3)
    outbox.open()
    with capture_logs() as logs:
        outbox.record([Change("b", n, float(n), event=True) for n in range(5)])
    assert [value for _, value in events_of(outbox)] == [2, 3, 4]
    assert outbox.dropped_events == 2
    warning = next(entry for entry in logs if entry["event"] == "outbox_events_dropped")
    assert warning["dropped"] == 2 and warning["log_level"] == "warning"


def test_dropped_count_survives_a_restart(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_events=1)
    outbox.open()
    outbox.record([Change("b", n, float(n), event=True) for n in range(4)])
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.db", max_events=1)
    reopened.open()
    assert reopened.depth()["dropped_events"] == 3


def test_outbox_file_is_private(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    assert (tmp_path / "outbox.db").stat().st_mode & 0o777 == 0o600


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_full_disk_keeps_changes_in_memory_then_moves_them_back(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024, monotonic=clock)
    outbox.open()
    big = "x" * 2000
    with capture_logs() as logs:
        for n in range(60):  # ~120 KB of events into a 64 KB file
            outbox.record([Change("b", [n, big], float(n), event=True)])
    assert outbox.degraded
    assert any(entry["event"] == "outbox_disk_failed" for entry in logs)
    assert [value[0] for _, value in events_of(outbox)] == list(range(60))  # nothing lost
    # Delivery frees the disk; after the retry interval the memory part moves back.
    outbox.ack_events(outbox.next_events(50))
    clock.now = 10.0
    with capture_logs() as logs:
        outbox.record([Change("b", [60, "y"], 60.0, event=True)])
    assert not outbox.degraded
    assert any(entry["event"] == "outbox_disk_recovered" for entry in logs)
    assert [value[0] for _, value in events_of(outbox)] == list(range(50, 61))


def fill_until_degraded(outbox: Outbox) -> None:
    big = "x" * 2000
    n = 0
    while not outbox.degraded:
        outbox.record([Change("b", [n, big], float(n), event=True)])
        n += 1


def test_a_full_disk_is_logged_as_a_full_disk(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024)
    outbox.open()
    with capture_logs() as logs:
        fill_until_degraded(outbox)
    (failure,) = [entry for entry in logs if entry["event"] == "outbox_disk_failed"]
    assert "full" in failure["error"]


def test_acking_a_value_held_in_memory_also_forgets_the_older_one_on_disk(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024, monotonic=clock)
    outbox.open()
    outbox.record([Change("led", False, 0.0)])  # on disk
    fill_until_degraded(outbox)
    outbox.record([Change("led", True, 1.0)])  # in memory: newer
    outbox.ack_reported({"led": True, "b": outbox.pending_reported()["b"][0]})
    assert outbox.pending_reported() == {}  # the stale False must not be reported again


async def test_writer_moves_memory_back_to_disk_without_waiting_for_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from gateway.core import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "RETRY_DISK_AFTER_S", 0.05)
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024)
    outbox.open()
    writer = OutboxWriter(outbox, on_persisted=lambda changes: None)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(writer.run(), name="outbox_writer")
        await asyncio.to_thread(fill_until_degraded, outbox)
        outbox.ack_events(outbox.next_events(10**6))  # delivered: the disk has room again
        async with asyncio.timeout(5):
            while outbox.degraded:
                await asyncio.sleep(0.01)
        task.cancel()
    assert outbox.depth()["events"] == 0


def aside_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def corrupt_page(path: Path, which: int) -> None:
    """Overwrite the ``which``-th page holding event rows with random bytes (file closed)."""
    data = bytearray(path.read_bytes())
    pages = [n for n in range(1, len(data) // 4096) if b"button" in data[n * 4096 : (n + 1) * 4096]]
    start = pages[which] * 4096
    data[start : start + 4096] = random.Random(which).randbytes(4096)
    path.write_bytes(bytes(data))


def filled(path: Path, presses: int) -> list[int]:
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", n % 2 == 0, float(n), event=True) for n in range(presses)])
    ids = [event.id for event in outbox.next_events(10**6)]
    outbox.close()  # checkpoints the WAL into the file
    return ids


def test_a_file_that_is_not_a_database_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    """Was: exit 1 at every start (a restart loop under systemd)."""
    path = tmp_path / "outbox.db"
    garbage = b"this is not sqlite" * 100
    path.write_bytes(garbage)
    outbox = Outbox(path)
    with capture_logs() as logs:
        outbox.open()
    [aside] = aside_files(path)
    assert aside.read_bytes() == garbage  # kept as found, for inspection
    moved = next(entry for entry in logs if entry["event"] == "outbox_corrupt_moved_aside")
    assert moved["moved_to"] == str(aside) and moved["events_salvaged"] == 0
    assert "not a database" in moved["error"]
    outbox.record([Change("button", True, 1.0, event=True)])
    assert events_of(outbox) == [("button", True)] and not outbox.degraded


def test_a_corrupt_page_loses_only_its_own_rows_the_rest_is_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ids = filled(path, 400)  # three leaf pages of events
    corrupt_page(path, 2)  # the first of them
    outbox = Outbox(path)
    with capture_logs() as logs:
        outbox.open()
    moved = next(entry for entry in logs if entry["event"] == "outbox_corrupt_moved_aside")
    assert moved["complete"] is False
    salvaged = [event.id for event in outbox.next_events(10**6)]
    assert moved["events_salvaged"] == len(salvaged) > 150
    assert salvaged == ids[-len(salvaged) :]  # the newest, read backwards past the bad page
    outbox.record([Change("button", True, 1.0, event=True)])
    assert outbox.next_events(10**6)[-1].id > ids[-1]  # ids go on, never reused
    outbox.close()
    reopened = Outbox(path)
    reopened.open()  # the fresh file is healthy and remembers the salvage
    assert len(reopened.next_events(10**6)) == len(salvaged) + 1


def test_corruption_met_while_running_replaces_the_file_and_the_write_lands(
    tmp_path: Path,
) -> None:
    """Was: reads hid every event (memory mode), the next write raised sqlite3.DatabaseError."""
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", n % 2 == 0, float(n), event=True) for n in range(400)])
    assert outbox._db is not None
    outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_page(path, 2)
    other = sqlite3.connect(path, isolation_level=None)  # a commit elsewhere empties our cache
    other.execute("INSERT INTO counters(name, value) VALUES('x', 1)")
    other.close()
    with capture_logs() as logs:
        outbox.record([Change("button", True, 999.0, event=True)])
    assert any(entry["event"] == "outbox_corrupt_moved_aside" for entry in logs)
    events = outbox.next_events(10**6)
    assert len(events) > 150 and events[-1].id > 400 and events[-1].observed_at == 999.0
    assert not outbox.degraded and len(aside_files(path)) == 1


def test_an_emptied_file_is_logged_with_the_depth_last_recorded(tmp_path: Path) -> None:
    """Was: SQLite took the zero-length file for a new outbox; 40 events vanished unsaid."""
    path = tmp_path / "outbox.db"
    ids = filled(path, 40)
    path.write_bytes(b"")
    outbox = Outbox(path)
    with capture_logs() as logs:
        outbox.open()
    replaced = next(entry for entry in logs if entry["event"] == "outbox_empty_file_replaced")
    assert replaced["last_known_depth"]["events"] == 40
    assert replaced["log_level"] == "error" and len(aside_files(path)) == 1
    outbox.record([Change("button", True, 1.0, event=True)])
    assert outbox.next_events(1)[0].id > ids[-1]  # the reserved ids are skipped, not reused


def test_event_ids_are_not_reused_when_the_file_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ids = filled(path, 5)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", True, 1.0, event=True)])
    assert outbox.next_events(1)[0].id > ids[-1]


def test_a_row_whose_bytes_changed_is_dropped_and_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", n, float(n), event=True) for n in range(3)])
    outbox.record([Change("led", True, 1.0)])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE events SET value=X'FF00' WHERE id=2")
    db.execute("UPDATE reported SET value='{' WHERE name='led'")
    db.close()
    with capture_logs() as logs:
        assert [event.value for event in outbox.next_events(10)] == [0, 2]
        assert "led" not in outbox.pending_reported()
    assert [e["table"] for e in logs if e["event"] == "outbox_rows_unreadable"] == [
        "events",
        "reported",
    ]
    assert outbox.depth()["events"] == 2 and outbox.dropped_events == 1


DEVICES = st.sampled_from(["a", "b", "c"])


class OutboxModel(RuleBasedStateMachine):
    """The model both machines check against: every undelivered event, in order, and the last
    undelivered value per key; delivering removes exactly what was delivered."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__()
        self.outbox = outbox
        self.outbox.open()
        self.expected_events: list[tuple[str, Any]] = []
        self.expected_reported: dict[str, Any] = {}
        self.counter = 0

    def expect(self, device: str, value: Any, event: bool) -> None:
        if event:
            self.expected_events.append((device, value))
        self.expected_reported[device] = value

    @rule(count=st.integers(0, 8))
    def deliver_events(self, count: int) -> None:
        batch = self.outbox.next_events(count)
        self.outbox.ack_events(batch)
        del self.expected_events[: len(batch)]

    @rule(device=DEVICES)
    def deliver_reported(self, device: str) -> None:
        pending = self.outbox.pending_reported()
        if device in pending:
            self.outbox.ack_reported({device: pending[device][0]})
            del self.expected_reported[device]

    @invariant()
    def nothing_is_lost_and_nothing_delivered_returns(self) -> None:
        assert events_of(self.outbox) == self.expected_events
        pending = {name: value for name, (value, _) in self.outbox.pending_reported().items()}
        assert pending == self.expected_reported


class OutboxMachine(OutboxModel):
    """Any interleaving of writes, acks, crashes and restarts loses nothing acknowledged."""

    def __init__(self) -> None:
        import tempfile

        self.path = Path(tempfile.mkdtemp()) / "outbox.db"
        super().__init__(Outbox(self.path, sync="normal"))

    @rule(device=DEVICES, event=st.booleans(), count=st.integers(1, 4))
    def write(self, device: str, event: bool, count: int) -> None:
        changes = []
        for _ in range(count):
            self.counter += 1
            changes.append(Change(device, self.counter, float(self.counter), event=event))
            self.expect(device, self.counter, event)
        self.outbox.record(changes)

    @rule()
    def crash_and_restart(self) -> None:
        # kill -9: the connection is abandoned, not closed; a new process opens the file.
        self.outbox = Outbox(self.path, sync="normal")
        self.outbox.open()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = __import__("hypothesis").settings(
    max_examples=40, stateful_step_count=15
)


class FullDiskOutboxMachine(OutboxModel):
    """Any interleaving of writes (small and large), deliveries and disk retries on a 64 KB
    outbox: whether a change sits on disk or in memory while the disk is full, none is lost,
    and a delivered value never comes back."""

    def __init__(self) -> None:
        import tempfile

        self.clock = FakeClock()
        path = Path(tempfile.mkdtemp()) / "outbox.db"
        super().__init__(Outbox(path, max_bytes=64 * 1024, monotonic=self.clock))

    # Three large writes fill the file, so runs reach the full disk and back within a few steps.
    @rule(device=DEVICES, event=st.booleans(), size=st.sampled_from([1, 20_000]))
    def write(self, device: str, event: bool, size: int) -> None:
        self.counter += 1
        value = [self.counter, "x" * size]
        self.outbox.record([Change(device, value, float(self.counter), event=event)])
        self.expect(device, value, event)

    @rule()
    def retry_the_disk_later(self) -> None:
        self.clock.now += 10.0
        self.outbox.retry_disk()


TestFullDiskOutboxMachine = FullDiskOutboxMachine.TestCase
TestFullDiskOutboxMachine.settings = __import__("hypothesis").settings(
    max_examples=40, stateful_step_count=30, deadline=None
)


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    Outbox(tmp_path / "outbox.db").open()
    mode = sqlite3.connect(tmp_path / "outbox.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


# --- depth: cached by the writer, read without the lock or SQLite --------------------------------


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


def test_depth_is_read_without_the_lock_or_a_query(tmp_path: Path) -> None:
    """Was: depth() took the writer's lock and ran COUNT(*) queries: on the event loop, a
    status request or a metrics scrape waited for whatever transaction the writer was in."""
    import threading

    outbox = Outbox(tmp_path / "outbox.db")
    outbox.open()
    outbox.record([Change("button", n % 2 == 0, float(n), event=True) for n in range(5)])
    assert outbox._db is not None
    statements: list[str] = []
    outbox._db.set_trace_callback(statements.append)
    answers: list[dict[str, int]] = []
    with outbox._lock:  # the writer is in a long transaction
        reader = threading.Thread(target=lambda: answers.append(outbox.depth()))
        reader.start()
        reader.join(timeout=2.0)
    assert answers == [{"events": 5, "reported": 1, "dropped_events": 0}]
    assert statements == []
    outbox.close()


def test_cached_depth_follows_every_write_of_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, max_events=10)
    outbox.open()
    assert outbox.depth() == {"events": 0, "reported": 0, "dropped_events": 0}
    outbox.record([Change(f"d{n % 3}", n, float(n), event=n % 2 == 0) for n in range(8)])
    assert (
        outbox.depth()
        == {**counted(path), "dropped_events": 0}
        == {
            "events": 4,
            "reported": 3,
            "dropped_events": 0,
        }
    )
    outbox.record([Change("d0", n, float(n), event=True) for n in range(10)])  # bound: 4 drop
    assert outbox.depth() == {**counted(path), "dropped_events": 4}
    outbox.ack_events(outbox.next_events(3))
    outbox.ack_events(outbox.next_events(1) * 2)  # the same event twice: deleted once
    assert outbox.depth() == {**counted(path), "dropped_events": 4}
    pending = outbox.pending_reported()
    outbox.ack_reported({"d1": pending["d1"][0], "d2": "superseded"})  # d2 stays
    assert outbox.depth() == {**counted(path), "dropped_events": 4}
    assert outbox.depth()["reported"] == 2 and outbox.depth()["events"] == 6
    outbox.close()
    reopened = Outbox(path, max_events=10)
    reopened.open()
    assert reopened.depth() == {"events": 6, "reported": 2, "dropped_events": 4}
    reopened.close()


def test_cached_depth_counts_memory_while_degraded_and_after_recovery(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, max_bytes=64 * 1024, monotonic=clock)
    outbox.open()
    fill_until_degraded(outbox)
    waiting = len(outbox.next_events(10**6))
    assert outbox.depth()["events"] == waiting
    assert outbox.depth()["events"] > counted(path)["events"]  # some wait in memory
    outbox.ack_events(outbox.next_events(waiting - 2))
    clock.now = 10.0
    outbox.retry_disk()
    assert not outbox.degraded
    assert outbox.depth() == {**counted(path), "dropped_events": 0}
    assert outbox.depth()["events"] == 2
    outbox.close()


def test_cached_depth_after_a_corrupt_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", n % 2 == 0, float(n), event=True) for n in range(400)])
    assert outbox._db is not None
    outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_page(path, 2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("INSERT INTO counters(name, value) VALUES('x', 1)")
    other.close()
    outbox.record([Change("button", True, 999.0, event=True)])
    assert outbox.depth()["events"] == len(outbox.next_events(10**6)) == counted(path)["events"]
    outbox.close()
