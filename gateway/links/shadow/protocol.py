"""The shadow protocol: requests on the wire and the replies that answer them.

Topics and clientTokens, at most 10 requests in flight and 20 per second (as AWS allows), a
bounded queue in which waiting updates merge (the newest value per key wins), reply expiry,
and retries: a 409 fetches the document again, a 429 or 5xx resends after a pause, a get
answered 404 means there is no shadow yet. What a document or a delta means for the devices is
the sync's business (``shadow.py``); this module only keeps requests and replies straight.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import structlog

from gateway.core.ports import Clock, MqttSession
from gateway.core.timers import Timers
from gateway.core.values import JsonValue
from gateway.links.shadow.messages import ErrorReply, describe_shape
from gateway.links.shadow.reconcile import ClientTokens, RateLimiter, ShadowUpdate, merge_updates
from gateway.links.shadow.topics import Reply, ShadowTopics

log = structlog.get_logger()

MAX_IN_FLIGHT = 10  # AWS answers 429 beyond 10 unacknowledged shadow requests per connection
MAX_REQUESTS_PER_S = 20  # AWS's per-thing shadow request rate
REPLY_TIMEOUT_S = 10.0
THROTTLE_RETRY_S = 1.0
# Requests waiting for the sender. Updates merge into the newest waiting one, so a flood of
# deltas never grows the queue; past this bound even a versioned update merges.
MAX_QUEUED_REQUESTS = 16


@dataclass(eq=False)
class ShadowRequest:
    kind: Literal["get", "update"]
    update: ShadowUpdate | None = None
    # Input/sensor changes this update carries: put back for resending if it is not accepted.
    batch: dict[str, JsonValue] = field(default_factory=dict)
    observed_at: float | None = None
    token: str = ""  # given when sent
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def payload(self) -> dict[str, Any]:
        if self.update is None:
            return {"clientToken": self.token}
        return self.update.to_payload(self.token)

    def absorb(self, newer: ShadowRequest) -> None:
        """Take a newer update's content into this one (still waiting to be sent)."""
        assert self.update is not None and newer.update is not None
        self.update = merge_updates(self.update, newer.update)
        self.batch = {**self.batch, **newer.batch}
        if newer.observed_at is not None:
            self.observed_at = max(self.observed_at or newer.observed_at, newer.observed_at)


class RequestQueue:
    """The sender's queue: bounded, and updates waiting in it coalesce (newest value wins)."""

    def __init__(self) -> None:
        self._items: deque[ShadowRequest] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, request: ShadowRequest) -> ShadowRequest:
        """Queue ``request``, or merge it into the newest waiting update; returns the request
        that will carry it."""
        tail = self._items[-1] if self._items else None
        if tail is not None and request.kind == "update" and tail.kind == "update":
            assert tail.update is not None and request.update is not None
            same_kind = (tail.update.version is None) == (request.update.version is None)
            if same_kind or len(self._items) >= MAX_QUEUED_REQUESTS:
                tail.absorb(request)
                return tail
        if len(self._items) >= MAX_QUEUED_REQUESTS:
            # Only gets and alternating update kinds get here; a get is deduplicated upstream.
            for waiting in reversed(self._items):
                if waiting.kind == request.kind == "update":
                    waiting.absorb(request)
                    return waiting
        self._items.append(request)
        self._ready.set()
        return request

    async def get(self) -> ShadowRequest:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def pop(self) -> ShadowRequest:
        """The oldest waiting request (one must be waiting)."""
        return self._items.popleft()

    def drain(self) -> list[ShadowRequest]:
        items = list(self._items)
        self._items.clear()
        return items


class _Slots:
    """Room for ``MAX_IN_FLIGHT`` requests awaiting their reply; one is taken at once when free
    (the sender waits for one, the immediate send only takes a free one)."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._freed = asyncio.Event()

    def try_take(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    async def take(self) -> None:
        while not self.try_take():
            self._freed.clear()
            await self._freed.wait()

    def give(self) -> None:
        self.free += 1
        self._freed.set()


class ProtocolEvents(Protocol):
    """What the protocol tells the sync about requests it cannot settle by itself."""

    def on_not_accepted(self, request: ShadowRequest) -> None:
        """An update will not be retried as it is: its input changes must go out again."""

    def on_no_shadow(self) -> None:
        """The get was answered 404: there is no shadow yet."""


class ShadowProtocol:
    """One thing's shadow requests over one session at a time."""

    def __init__(
        self, topics: ShadowTopics, events: ProtocolEvents, *, monotonic: Clock = time.monotonic
    ) -> None:
        self.topics = topics
        self._events = events
        self._monotonic = monotonic
        self._tokens = ClientTokens()
        self._limiter = RateLimiter(MAX_REQUESTS_PER_S, burst=MAX_IN_FLIGHT)
        self._timers = Timers(monotonic=monotonic)
        self._queue = RequestQueue()
        self._in_flight: dict[str, ShadowRequest] = {}
        self._slots = _Slots(MAX_IN_FLIGHT)
        self._get_pending = False
        self.active = False
        # The session's publish that queues without waiting for the PUBACK (the aiomqtt one
        # has it), and whether the sender task is idle: then an update is sent at once.
        self._publish_nowait: Callable[[str, bytes], None] | None = None
        self._sender_idle = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def is_ours(self, token: str | None) -> bool:
        """Whether a clientToken came from this process (AWS echoes it in what it causes)."""
        return self._tokens.is_ours(token)

    # -- a session --------------------------------------------------------------------------------

    def start_session(self) -> None:
        self._timers = Timers(monotonic=self._monotonic)  # nothing left over from the last one
        self._get_pending = False
        self._queue = RequestQueue()
        self._in_flight.clear()
        self._slots = _Slots(MAX_IN_FLIGHT)
        self.active = True

    async def run(self, session: MqttSession) -> None:
        """Send queued requests and host the expiry and retry timers, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._timers.run(), name="shadow_timers")
                group.create_task(self._send_loop(session), name="shadow_sender")
        finally:
            self._publish_nowait = None
            self._sender_idle = False

    def abandon(self) -> list[ShadowRequest]:
        """The session is gone: every request not answered, for its changes to be kept."""
        self.active = False
        self._publish_nowait = None
        pending = [*self._in_flight.values(), *self._queue.drain()]
        for request in pending:
            request.done.set()
        self._in_flight.clear()
        return pending

    # -- requests ---------------------------------------------------------------------------------

    def request_get(self) -> None:
        if self._get_pending:
            return  # one fetch answers every conflict noticed meanwhile
        self._get_pending = True
        self._queue.put(ShadowRequest("get"))

    def enqueue_update(
        self,
        update: ShadowUpdate,
        *,
        batch: dict[str, JsonValue] | None = None,
        observed_at: float | None = None,
    ) -> ShadowRequest:
        request = self._queue.put(ShadowRequest("update", update, batch or {}, observed_at))
        self._send_at_once()
        return request

    def _send_at_once(self) -> None:
        """Publish the one waiting request from here when the sender is idle and neither the
        in-flight bound nor the rate limit holds it back: a delta's report then leaves on the
        loop turn that handled the delta, not two turns later through the sender task.

        Only a session that queues a publish without waiting for its PUBACK offers this. A
        publish it refuses means the connection is gone: the session ends, and ``abandon``
        keeps the request's changes like those of any other request awaiting its reply."""
        publish = self._publish_nowait
        if publish is None or not self._sender_idle or len(self._queue) != 1:
            return
        if not self._slots.try_take():
            return
        if self._limiter.delay(self._monotonic()) > 0:
            self._slots.give()
            return
        request = self._queue.pop()
        publish(*self._prepare(request))

    async def _send_loop(self, session: MqttSession) -> None:
        self._publish_nowait = getattr(session, "publish_nowait", None)
        while True:
            self._sender_idle = True
            request = await self._queue.get()
            self._sender_idle = False
            await self._slots.take()
            # Sleeping on the token bucket (not an event): the wait is computed, not signalled.
            while (wait := self._limiter.delay(self._monotonic())) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            topic, body = self._prepare(request)
            await session.publish(topic, body, qos=1)

    def _prepare(self, request: ShadowRequest) -> tuple[str, bytes]:
        """Give ``request`` its clientToken and reply timer; its topic and body."""
        topic = self.topics.get if request.kind == "get" else self.topics.update
        request.token = self._tokens.next()
        self._in_flight[request.token] = request
        self._timers.start(
            f"expire:{request.token}", REPLY_TIMEOUT_S, partial(self._expire, request.token)
        )
        return topic, json.dumps(request.payload(), separators=(",", ":")).encode()

    # -- replies ----------------------------------------------------------------------------------

    def answered(self, token: str | None) -> ShadowRequest | None:
        """The request of ours a reply answers (now complete), or None if it is not ours."""
        request = self._in_flight.pop(token or "", None)
        if request is None:
            return None
        self._timers.cancel(f"expire:{request.token}")
        self._slots.give()
        request.done.set()
        if request.kind == "get":
            self._get_pending = False
        return request

    def on_rejected(self, kind: Reply, error: ErrorReply) -> None:
        request = self.answered(error.client_token)
        if request is None:
            return  # a reply to another client of this thing
        if kind is Reply.GET_REJECTED:
            if error.code == 404:
                self._events.on_no_shadow()
                return
            log.warning("shadow_get_rejected", code=error.code, message=error.message)
            self._retry_later("get", self.request_get)
            return
        if error.code == 409:
            log.info("update_version_conflict", message=error.message)
            self._events.on_not_accepted(request)
            self.request_get()
        elif error.code == 429 or error.code >= 500:
            log.warning("update_throttled", code=error.code, message=error.message)
            self._retry_later(f"resend:{request.token}", lambda: self._resend(request))
        else:
            shape = describe_shape(request.payload())
            log.warning(
                "update_rejected_dropped", code=error.code, message=error.message, shape=shape
            )

    def _resend(self, request: ShadowRequest) -> None:
        if not self.active:
            return
        self._queue.put(
            ShadowRequest(request.kind, request.update, request.batch, request.observed_at)
        )

    def _retry_later(self, name: str, action: Callable[[], None]) -> None:
        self._timers.start(f"retry:{name}", THROTTLE_RETRY_S, action)

    def _expire(self, token: str) -> None:
        request = self._in_flight.get(token)
        if request is None:
            return
        log.warning("shadow_reply_timeout", kind=request.kind, timeout_s=REPLY_TIMEOUT_S)
        self.answered(token)
        if request.kind == "get":
            self.request_get()
        elif request.batch:
            self._events.on_not_accepted(request)
        elif request.update is not None and request.update.desired:
            self.request_get()  # the delta is still there; fetch and reconcile again
