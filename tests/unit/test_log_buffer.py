"""The log shipper's buffer: order, bounds, and batches within PutLogEvents' limits."""

from __future__ import annotations

import threading

from gateway.credentials.cloudwatch import (
    EVENT_OVERHEAD_BYTES,
    MAX_AGE_MS,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_SPAN_MS,
    LogBuffer,
)

NOW = 1_800_000_000_000


def test_a_batch_holds_at_most_ten_thousand_events() -> None:
    buffer = LogBuffer(50_000, 64 << 20)
    for n in range(12_000):
        buffer.add(f"line {n}", NOW)
    batch = buffer.batch(NOW)
    assert batch is not None and len(batch.events) == MAX_BATCH_EVENTS == 10_000


def test_a_batch_counts_26_bytes_per_event_within_1_mib() -> None:
    buffer = LogBuffer(50_000, 64 << 20)
    message = "x" * 1000
    for _ in range(2000):
        buffer.add(message, NOW)
    batch = buffer.batch(NOW)
    assert batch is not None
    per_event = len(message) + EVENT_OVERHEAD_BYTES
    assert len(batch.events) == MAX_BATCH_BYTES // per_event
    assert len(batch.events) * per_event <= 1_048_576 < (len(batch.events) + 1) * per_event


def test_a_batch_spans_less_than_24_hours() -> None:
    buffer = LogBuffer(100, 1 << 20)
    buffer.add("first", NOW)
    buffer.add("same day", NOW + MAX_SPAN_MS - 1)
    buffer.add("next day", NOW + MAX_SPAN_MS)
    batch = buffer.batch(NOW + MAX_SPAN_MS)
    assert batch is not None and [m for _, m in batch.events] == ["first", "same day"]


def test_timestamps_never_go_backwards_when_the_clock_steps_back() -> None:
    buffer = LogBuffer(100, 1 << 20)
    buffer.add("a", NOW)
    buffer.add("b", NOW - 5000)
    batch = buffer.batch(NOW)
    assert batch is not None and batch.events == [(NOW, "a"), (NOW, "b")]


def test_beyond_the_count_bound_the_oldest_are_dropped_and_counted() -> None:
    buffer = LogBuffer(3, 1 << 20)
    for n in range(5):
        buffer.add(str(n), NOW + n)
    batch = buffer.batch(NOW)
    assert batch is not None and [m for _, m in batch.events] == ["2", "3", "4"]
    assert buffer.dropped == 2
    assert buffer.take_unreported_drops() == 2
    assert buffer.take_unreported_drops() == 0


def test_beyond_the_size_bound_the_oldest_are_dropped() -> None:
    buffer = LogBuffer(1000, 100 + 2 * EVENT_OVERHEAD_BYTES)
    buffer.add("a" * 50, NOW)
    buffer.add("b" * 50, NOW)
    buffer.add("c" * 50, NOW)
    assert buffer.size <= 100 + 2 * EVENT_OVERHEAD_BYTES
    batch = buffer.batch(NOW)
    assert batch is not None and [m[0] for _, m in batch.events] == ["b", "c"]


def test_commit_removes_only_what_was_sent_even_after_drops() -> None:
    buffer = LogBuffer(3, 1 << 20)
    for n in range(3):
        buffer.add(str(n), NOW)
    batch = buffer.batch(NOW)
    assert batch is not None
    buffer.add("3", NOW)  # while the batch is on its way: "0" is dropped for room
    buffer.commit(batch.last_seq)
    rest = buffer.batch(NOW)
    assert rest is not None and [m for _, m in rest.events] == ["3"]


def test_lines_older_than_cloudwatch_accepts_are_dropped_and_counted() -> None:
    buffer = LogBuffer(100, 1 << 20)
    buffer.add("ancient", NOW - MAX_AGE_MS - 1)
    buffer.add("recent", NOW)
    batch = buffer.batch(NOW)
    assert batch is not None and [m for _, m in batch.events] == ["recent"]
    assert buffer.dropped == 1


def test_an_oversized_line_is_clipped_to_one_event_limit() -> None:
    buffer = LogBuffer(10, 4 << 20)
    buffer.add("é" * MAX_EVENT_BYTES, NOW)
    batch = buffer.batch(NOW)
    assert batch is not None
    ((_, message),) = batch.events
    assert len(message.encode()) <= MAX_EVENT_BYTES and message.endswith("[truncated]")


def test_lines_added_from_threads_are_all_kept_in_one_order() -> None:
    buffer = LogBuffer(100_000, 64 << 20)

    def writer(name: str) -> None:
        for n in range(1000):
            buffer.add(f"{name}-{n}", NOW)

    threads = [threading.Thread(target=writer, args=(str(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch = buffer.batch(NOW)
    assert batch is not None and len(batch.events) == 4000
    for name in "0123":
        mine = [int(m.split("-")[1]) for _, m in batch.events if m.startswith(f"{name}-")]
        assert mine == list(range(1000))
