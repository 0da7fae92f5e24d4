"""Shipping the gateway's log lines to CloudWatch Logs, as Ioto's agent does.

Three parts, so logging never waits on the network:

- ``ShippingHandler``: a ``logging`` handler beside the one that prints (structlog's lines and
  the standard-library loggers' all reach it, already through the shared processors); it
  renders each record as one JSON line and appends it to the buffer. Nothing else: no I/O, no
  await, a lock held for an append.
- ``LogBuffer``: the lines in order (timestamps never go backwards), bounded by a count and a
  size; beyond either bound the oldest are dropped and counted. It hands out batches within the
  limits of PutLogEvents (the API reference, "PutLogEvents"): at most 10,000 events and
  1,048,576 bytes counted as each message's UTF-8 length plus 26, in chronological order,
  spanning less than 24 hours, no event larger than 256 KB and none older than 14 days.
- ``CloudWatchShipper``: a supervised task that sends a batch every ``flush_s`` (and sends on
  while whole batches wait), signed with SigV4 (``sigv4``) over the AWS JSON 1.1 protocol
  (``X-Amz-Target: Logs_20140328.<Action>``, as Ioto's agent calls it). A missing group or
  stream (ResourceNotFoundException) is created (CreateLogGroup, CreateLogStream) and the batch
  sent again; a failure keeps the batch and backs off; lines dropped meanwhile are reported
  with one counted warning (``cloudwatch_events_dropped``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog

from gateway.config.credentials import CloudWatchConfig
from gateway.core.backoff import Backoff
from gateway.core.tls import client_context
from gateway.credentials.model import AwsCredentials
from gateway.credentials.sigv4 import sign
from gateway.errors import GatewayError, UpdateError
from gateway.updates.http import HttpClient, HttpReply

log = structlog.get_logger()

# PutLogEvents' limits (the API reference).
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD_BYTES
MAX_SPAN_MS = 24 * 3600 * 1000
MAX_AGE_MS = 14 * 24 * 3600 * 1000 - 3600 * 1000  # 14 days, less an hour for clock skew
TRUNCATED = "…[truncated]"
TARGET_PREFIX = "Logs_20140328."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_ANSWER_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 30.0
RETRY_MIN_S = 1.0
RETRY_MAX_S = 300.0
# 400s that sending the same batch again cannot fix: the batch is dropped (and counted).
_UNFIXABLE = frozenset({"InvalidParameterException", "DataAlreadyAcceptedException"})


@dataclass(frozen=True)
class Batch:
    """Events for one PutLogEvents: (timestamp ms, message), and the last one's number."""

    events: list[tuple[int, str]]
    last_seq: int


def _clip(message: str) -> tuple[str, int]:
    """The message within one event's size limit, and its UTF-8 size."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_EVENT_BYTES:
        return message, len(data)
    keep = MAX_EVENT_BYTES - len(TRUNCATED.encode())
    clipped = data[:keep].decode("utf-8", "ignore") + TRUNCATED
    return clipped, len(clipped.encode())


class LogBuffer:
    """Lines waiting to be sent, in order, within ``max_events`` and ``max_bytes``.

    ``add`` may be called from any thread; batches go out in order and are removed by
    ``commit`` once sent (lines dropped meanwhile for room are simply gone)."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: deque[tuple[int, int, str, int]] = deque()  # seq, ts, message, size
        self._bytes = 0
        self._seq = 0
        self._last_ts = 0
        self._lock = threading.Lock()
        self.dropped = 0  # lines dropped for room or age since start
        self._unreported = 0  # ... of which not yet reported

    def __len__(self) -> int:
        return len(self._events)

    @property
    def size(self) -> int:
        return self._bytes

    def add(self, message: str, ts_ms: int) -> None:
        message, size = _clip(message)
        size += EVENT_OVERHEAD_BYTES
        with self._lock:
            # Chronological order is the API's rule; a clock stepping back must not break it.
            ts = max(ts_ms, self._last_ts)
            self._last_ts = ts
            self._seq += 1
            self._events.append((self._seq, ts, message, size))
            self._bytes += size
            while len(self._events) > self.max_events or self._bytes > self.max_bytes:
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, _, _, size = self._events.popleft()
        self._bytes -= size
        self.dropped += 1
        self._unreported += 1

    def take_unreported_drops(self) -> int:
        with self._lock:
            count, self._unreported = self._unreported, 0
        return count

    def batch(self, now_ms: int) -> Batch | None:
        """The oldest lines that fit one PutLogEvents (None when empty); lines too old for
        CloudWatch are dropped first."""
        with self._lock:
            while self._events and self._events[0][1] < now_ms - MAX_AGE_MS:
                self._drop_oldest()
            if not self._events:
                return None
            events: list[tuple[int, str]] = []
            total = 0
            first_ts = self._events[0][1]
            last_seq = 0
            for seq, ts, message, size in self._events:
                if (
                    len(events) >= MAX_BATCH_EVENTS
                    or total + size > MAX_BATCH_BYTES
                    or ts - first_ts >= MAX_SPAN_MS
                ):
                    break
                events.append((ts, message))
                total += size
                last_seq = seq
        return Batch(events, last_seq)

    def commit(self, last_seq: int) -> None:
        """Remove the lines up to ``last_seq`` (they were sent)."""
        with self._lock:
            while self._events and self._events[0][0] <= last_seq:
                _, _, _, size = self._events.popleft()
                self._bytes -= size


class ShippingHandler(logging.Handler):
    """Renders each record as a JSON line and appends it to a ``LogBuffer``."""

    def __init__(self, buffer: LogBuffer, pre_chain: list[Any]) -> None:
        super().__init__()
        self.buffer = buffer
        # The stdout handler's renderer may be the console one; CloudWatch gets JSON lines.
        self.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=pre_chain,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
            )
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.buffer.add(self.format(record), int(record.created * 1000))
        except Exception:  # a line that cannot be rendered must not disturb logging
            self.buffer.dropped += 1


class CloudWatchError(GatewayError):
    """A CloudWatch Logs call failed; ``kind`` is the API's error type, when it said one."""

    def __init__(self, message: str, kind: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class CloudWatchShipper:
    """Sends ``buffer`` to ``settings.group``/``stream`` with ``credentials()``."""

    def __init__(
        self,
        settings: CloudWatchConfig,
        buffer: LogBuffer,
        *,
        stream: str,
        credentials: Callable[[], AwsCredentials | None],
        region: Callable[[], str | None],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.group = settings.group
        self.stream = settings.stream or stream
        self._credentials = credentials
        self._region = region
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.sent = 0  # events accepted by CloudWatch
        self.batches = 0
        self.rejected = 0  # events of batches CloudWatch refused as invalid (dropped)
        self.partly_rejected = 0  # accepted batches in which CloudWatch refused some events
        self.failures = 0
        self.last_error: str | None = None
        self._waiting_logged = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "cloudwatch": {
                "group": self.group,
                "stream": self.stream,
                "buffered": len(self.buffer),
                "sent": self.sent,
                "dropped": self.buffer.dropped,
                "rejected": self.rejected,
                "partly_rejected": self.partly_rejected,
                "failures": self.failures,
                "error": self.last_error,
            }
        }

    async def run(self) -> None:
        """Send every ``flush_s`` until cancelled; failures back off (full jitter)."""
        backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S, float("inf"), self._rng)
        context = await asyncio.to_thread(client_context, None)
        async with HttpClient(ssl_context=context, timeout_s=REQUEST_TIMEOUT_S) as http:
            while True:
                try:
                    await self.flush(http)
                    backoff.reset()
                    delay = self.settings.flush_s
                except Exception as exc:  # nothing CloudWatch answers may end the task
                    self.failures += 1
                    expected = isinstance(exc, CloudWatchError)
                    error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
                    self.last_error = error[:200]
                    delay = max(self.settings.flush_s, backoff.next_delay())
                    log.warning(
                        "cloudwatch_send_failed",
                        error=self.last_error,
                        buffered=len(self.buffer),
                        retry_in_s=round(delay, 1),
                    )
                await self._sleep(delay)

    async def flush(self, http: HttpClient) -> None:
        """Send whole batches until the buffer is empty (or there is nothing to sign with)."""
        while True:
            dropped = self.buffer.take_unreported_drops()
            if dropped:
                log.warning(
                    "cloudwatch_events_dropped",
                    dropped=dropped,
                    dropped_total=self.buffer.dropped,
                    max_buffer_events=self.buffer.max_events,
                    max_buffer_bytes=self.buffer.max_bytes,
                )
            batch = self.buffer.batch(int(self._clock() * 1000))
            if batch is None:
                return
            creds, region = self._credentials(), self._region()
            if creds is None or region is None:
                if not self._waiting_logged:  # once per wait, not once per flush
                    self._waiting_logged = True
                    log.info("cloudwatch_waiting", credentials=creds is not None, region=region)
                return
            self._waiting_logged = False
            await self._put(http, batch, creds, region)

    async def _put(
        self, http: HttpClient, batch: Batch, creds: AwsCredentials, region: str
    ) -> None:
        body = {
            "logGroupName": self.group,
            "logStreamName": self.stream,
            "logEvents": [{"timestamp": ts, "message": message} for ts, message in batch.events],
        }
        try:
            answer = await self.call(http, "PutLogEvents", body, creds, region)
        except CloudWatchError as exc:
            if exc.kind == "ResourceNotFoundException":
                await self._create(http, creds, region)
                answer = await self.call(http, "PutLogEvents", body, creds, region)
            elif exc.kind in _UNFIXABLE:
                self.buffer.commit(batch.last_seq)
                self.rejected += len(batch.events)
                log.error("cloudwatch_batch_rejected", events=len(batch.events), error=str(exc))
                return
            else:
                raise
        self.buffer.commit(batch.last_seq)
        self.batches += 1
        rejected = answer.get("rejectedLogEventsInfo") if isinstance(answer, dict) else None
        if isinstance(rejected, dict) and rejected:
            self.partly_rejected += 1
            log.warning("cloudwatch_events_rejected", **_rejected_shape(rejected))
        self.sent += len(batch.events)

    async def _create(self, http: HttpClient, creds: AwsCredentials, region: str) -> None:
        """Create the group and the stream; "already exists" is success."""
        group = {"logGroupName": self.group}
        for action, body in (
            ("CreateLogGroup", group),
            ("CreateLogStream", {**group, "logStreamName": self.stream}),
        ):
            try:
                await self.call(http, action, body, creds, region)
                log.info("cloudwatch_created", action=action, group=self.group, stream=self.stream)
            except CloudWatchError as exc:
                if exc.kind != "ResourceAlreadyExistsException":
                    raise

    def endpoint(self, region: str) -> str:
        return self.settings.endpoint or f"https://logs.{region}.amazonaws.com/"

    async def call(
        self,
        http: HttpClient,
        action: str,
        body: dict[str, Any],
        creds: AwsCredentials,
        region: str,
    ) -> Any:
        """One CloudWatch Logs API call; its JSON answer, or CloudWatchError."""
        url = self.endpoint(region)
        now = datetime.fromtimestamp(self._clock(), UTC)
        # Encoding and hashing a 1 MB batch takes milliseconds: off the loop.
        data, headers = await asyncio.to_thread(
            partial(_signed, url, action, body=body, creds=creds, region=region, now=now)
        )
        try:
            reply = await http.request(
                "POST",
                url,
                headers=headers,
                data=data,
                max_bytes=MAX_ANSWER_BYTES,
                raise_for_status=False,
            )
        except UpdateError as exc:  # the HTTP client's: transport, redirect, size
            raise CloudWatchError(f"{action}: {exc}") from exc
        if 200 <= reply.status < 300:
            return _json(reply)
        kind = _error_kind(reply)
        raise CloudWatchError(
            f"{action} answered {reply.status} {kind or ''}".rstrip(), kind, reply.status
        )


def _signed(
    url: str,
    action: str,
    *,
    body: dict[str, Any],
    creds: AwsCredentials,
    region: str,
    now: datetime,
) -> tuple[bytes, dict[str, str]]:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = sign(
        method="POST",
        url=url,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET_PREFIX + action},
        body=data,
        access_key_id=creds.access_key_id,
        secret_access_key=creds.secret_access_key,
        session_token=creds.session_token,
        region=region,
        service="logs",
        now=now,
    )
    return data, headers


def _json(reply: HttpReply) -> Any:
    try:
        return reply.json(what="the CloudWatch Logs answer")
    except UpdateError:
        return None


def _error_kind(reply: HttpReply) -> str | None:
    """The JSON protocol's error type (``__type``, maybe ``namespace#Type``), or the header's."""
    answer = _json(reply)
    kind = answer.get("__type") if isinstance(answer, dict) else None
    if not isinstance(kind, str):
        kind = reply.headers.get("x-amzn-errortype")
    if not isinstance(kind, str) or not kind:
        return None
    kind = kind.split("#")[-1].split(":")[0]
    return kind[:80] if kind.isidentifier() else None


def _rejected_shape(rejected: dict[str, Any]) -> dict[str, int]:
    keys = ("tooNewLogEventStartIndex", "tooOldLogEventEndIndex", "expiredLogEventEndIndex")
    return {key: value for key in keys if isinstance(value := rejected.get(key), int)}
