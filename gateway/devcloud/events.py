"""The cloud side of a thing's event stream: collect what reaches the broker on its events and
status topics, and check the at-least-once contract (used by the resilience tests and the soak).

Events arrive in batches ``{"thing", "events": [{"id", "device", "value", "observed_at"}]}``.
A redelivery carries the id it had the first time; anything else repeated, or an id going
backwards, breaks the contract and raises ``EventOrderError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.devcloud.pki import Credentials, DevCloudError, client_ssl_context
from gateway.devcloud.service import _new_client

__all__ = ["EventCollector", "EventOrderError", "collect_events"]


class EventOrderError(DevCloudError):
    """Events arrived out of order, or a repeated id carried a different event."""


class EventCollector:
    """What arrived on the thing's events and status topics, in arrival order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.statuses: list[str] = []
        self._changed = asyncio.Event()

    def add_batch(self, payload: bytes) -> None:
        self.events.extend(json.loads(payload)["events"])
        self._changed.set()

    def add_status(self, payload: bytes) -> None:
        self.statuses.append(payload.decode())
        self._changed.set()

    def unique_in_order(self) -> list[dict[str, Any]]:
        """The events with redeliveries removed; raises if the contract was broken."""
        seen: dict[int, dict[str, Any]] = {}
        newest = -1
        for event in self.events:
            event_id = event["id"]
            if event_id in seen:
                if seen[event_id] != event:
                    raise EventOrderError(f"event {event_id} redelivered with other content")
                continue
            if event_id < newest:
                raise EventOrderError(f"event {event_id} arrived after event {newest}")
            seen[event_id] = event
            newest = event_id
        return list(seen.values())

    @property
    def redeliveries(self) -> int:
        return len(self.events) - len({event["id"] for event in self.events})

    async def wait_for(
        self,
        condition: Callable[[], bool],
        timeout: float = 15,  # noqa: ASYNC109  # like ShadowClient.wait_for; asyncio.timeout inside
    ) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def collect_events(
    host: str, port: int, credentials: Credentials, thing: str
) -> AsyncIterator[EventCollector]:
    """Subscribe (QoS 1) to ``things/<thing>/events`` and ``/status`` for the block's length."""
    tls = await asyncio.to_thread(client_ssl_context, credentials)
    collector = EventCollector()
    async with _new_client(host, port, f"collector-{uuid.uuid4().hex[:8]}", tls) as client:
        await client.subscribe([(f"things/{thing}/events", 1), (f"things/{thing}/status", 1)])

        async def read() -> None:
            async for message in client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                if message.topic.value.endswith("/events"):
                    collector.add_batch(data)
                else:
                    collector.add_status(data)

        # Tracked here and cancelled on the way out: the reader lives exactly as long as the block.
        reader = asyncio.ensure_future(read())
        try:
            yield collector
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
