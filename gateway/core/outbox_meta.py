"""Event ids that are never reused, and the meta file beside the outbox that promises them.

Ids are reserved ahead in blocks of ``ID_BLOCK`` in ``<outbox file>.meta.json`` (written
atomically, with the outbox's depth at its last open and close), so an id stays unused even
when the database that counted them is lost: a fresh database continues after the reserved
ones. Blocking file I/O, called under the outbox's lock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.core.atomicfile import write_atomic
from gateway.errors import GatewayError

log = structlog.get_logger()

ID_BLOCK = 1000  # event ids reserved per write of the meta file
MAX_META_BYTES = 4096


@dataclass(frozen=True)
class OutboxMeta:
    """What the outbox keeps beside its database: reserved event ids, the last known depth."""

    event_ids_reserved: int = 0
    depth: dict[str, int] | None = None
    at: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {"event_ids_reserved": self.event_ids_reserved, "depth": self.depth, "at": self.at}
        ).encode()


def meta_path(path: Path) -> Path:
    """The meta file of the outbox database at ``path``."""
    return path.with_name(path.name + ".meta.json")


def read_meta(path: Path) -> OutboxMeta:
    """The meta file as far as it is sound; anything missing or malformed reads as unknown."""
    try:
        with path.open("rb") as stream:
            data = json.loads(stream.read(MAX_META_BYTES))
    except FileNotFoundError:
        return OutboxMeta()
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("outbox_meta_unreadable", path=str(path), error=type(exc).__name__)
        return OutboxMeta()
    if not isinstance(data, dict):
        return OutboxMeta()
    reserved = data.get("event_ids_reserved")
    depth = data.get("depth")
    at = data.get("at")
    return OutboxMeta(
        reserved if isinstance(reserved, int) and not isinstance(reserved, bool) else 0,
        {str(k): v for k, v in depth.items() if isinstance(v, int)}
        if isinstance(depth, dict)
        else None,
        float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
    )


class EventIds:
    """The newest event id handed out and the ids the meta file promises.

    ``meta_file=None`` (an outbox kept in memory) hands out ids without writing anything."""

    def __init__(self, meta_file: Path | None) -> None:
        self._file = meta_file
        self.last = 0  # newest event id handed out; ids are never reused
        self.reserved = 0  # ids up to this one are promised by the meta file
        self.known = False  # a database told the newest id (else: after the reserved ones)
        self.meta = OutboxMeta()

    def load(self) -> None:
        """At open: the reservation (and the depth) the meta file recorded."""
        assert self._file is not None
        self.meta = read_meta(self._file)
        self.reserved = self.meta.event_ids_reserved

    def seen(self, last_id: int) -> None:
        """A database, or the salvage of one, counted ids up to ``last_id``."""
        self.last = max(self.last, last_id)

    def continue_after_reserved(self) -> None:
        """Whatever counted the ids before is gone: continue after the reserved ones."""
        if not self.known:
            self.last = max(self.last, self.reserved)

    def database_opened(self, last_id: int, *, fresh: bool) -> None:
        """A database was opened that counted up to ``last_id`` (``fresh``: created just now)."""
        self.seen(last_id)
        if fresh:
            self.continue_after_reserved()
        self.known = True

    def next(self) -> int:
        """A new id; the meta file reserves the next block before the reserved ones run out."""
        self.last += 1
        if self.last > self.reserved and self._file is not None:
            self.reserved = self.last + ID_BLOCK
            self.write(self.meta.depth, at=self.meta.at)
        return self.last

    def write(self, depth: dict[str, int] | None, *, at: float | None = None) -> None:
        """Write the meta file: the reservation, ``depth`` and when it was taken (now unless
        ``at``)."""
        assert self._file is not None
        self.reserved = max(self.reserved, self.last)
        self.meta = OutboxMeta(self.reserved, depth, time.time() if at is None else at)
        try:
            write_atomic(self._file, self.meta.to_json(), 0o600)
        except GatewayError as exc:  # the reservation then only lives in this process
            log.warning("outbox_meta_not_written", error=str(exc))
