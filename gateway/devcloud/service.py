"""The dev cloud's Device Shadow service on a real broker, and a client acting as the cloud app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt
import structlog
from aiomqtt.types import PayloadType

from gateway.core.atomicfile import write_atomic
from gateway.core.backoff import Backoff
from gateway.devcloud.pki import (
    Credentials,
    DevCloudError,
    certificate_common_name,
    client_ssl_context,
)
from gateway.devcloud.shadowdoc import (
    MAX_NESTING,
    ShadowRequestError,
    ShadowStore,
    compute_delta,
    loads_bounded,
    shadow_prefix,
)

__all__ = [
    "MAX_REPLY_BYTES",
    "REPLY_NESTING",
    "ShadowClient",
    "ShadowRejectedError",
    "ShadowService",
    "ShadowTimeoutError",
]

_REQUEST_FILTERS: Final = ("$aws/things/+/shadow/+", "$aws/things/+/shadow/name/+/+")
_REPLY_FILTERS: Final = (
    "$aws/things/+/shadow/+/accepted",
    "$aws/things/+/shadow/+/rejected",
    "$aws/things/+/shadow/update/documents",
    "$aws/things/+/shadow/name/+/+/accepted",
    "$aws/things/+/shadow/name/+/+/rejected",
    "$aws/things/+/shadow/name/+/update/documents",
)
# Without TCP_NODELAY each hop on a quiet link can wait ~40 ms for Nagle / delayed ACK.
_SOCKET_OPTIONS: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
_KEEPALIVE: Final = 30
_SAVE_INTERVAL: Final = 0.5
# Reconnect delays to the local broker: full jitter under a ceiling of 0.4, 0.8, 1.6, 2 s, ...
_BACKOFF_BASE: Final = 0.4
_BACKOFF_MAX: Final = 2.0
_MUTATING_REPLIES: Final = ("/update/accepted", "/delete/accepted")
_DOCUMENTS_SUFFIX: Final = "/update/documents"
_REJECTED_SUFFIX: Final = "/rejected"
# Bounds for the service's replies as clients parse them: a document nests a section's six
# levels under documents/current/metadata/desired, plus a metadata leaf; two sections of 8 KB
# with per-leaf metadata, twice (previous and current), stay well under 1 MB.
REPLY_NESTING: Final = MAX_NESTING + 6
MAX_REPLY_BYTES: Final = 1024 * 1024
# Refusals that mean a malformed or hostile request (or our own failure), not a version race.
_HOSTILE_CODES: Final = frozenset({400, 413, 415, 500})

log = structlog.get_logger()


class ShadowRejectedError(DevCloudError):
    """The shadow service answered a request on its ``/rejected`` topic."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ShadowTimeoutError(DevCloudError, TimeoutError):
    """No answer (or no matching document) arrived in time."""


def _payload_bytes(payload: PayloadType) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _encode(payload: dict[str, Any]) -> bytes:
    # allow_nan=False: "Infinity"/"NaN" would make the reply unreadable to every JSON parser.
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def reconnect_backoff() -> Backoff:
    """The dev cloud's clients' reconnect delays (``reset()`` once a connection is up)."""
    return Backoff(_BACKOFF_BASE, _BACKOFF_MAX)


def _new_client(host: str, port: int, identifier: str, tls: ssl.SSLContext) -> aiomqtt.Client:
    return aiomqtt.Client(
        host,
        port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        tls_context=tls,
        socket_options=_SOCKET_OPTIONS,
        keepalive=_KEEPALIVE,
        clean_session=True,
        # Replies are published without awaiting each PUBACK; let more of them be in flight.
        max_inflight_messages=100,
    )


class _StateWriter:
    """Writes snapshots atomically from worker threads, never letting an older one win."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._written = 0

    def write(self, sequence: int, snapshot: dict[str, Any]) -> None:
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        with self._lock:
            if sequence <= self._written:
                return
            write_atomic(self._path, data, 0o600)
            self._written = sequence

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            raise DevCloudError(f"cannot read shadow state file {self._path}: {exc}") from exc
        if not isinstance(data, dict):
            raise DevCloudError(f"shadow state file {self._path} does not hold an object")
        return data


class ShadowService:
    """Answers shadow requests published on the broker, like the AWS Device Shadow service.

    Connects with client id = certificate CN, so a second instance takes the session over.
    """

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        credentials: Credentials,
        *,
        store: ShadowStore | None = None,
        state_file: Path | None = None,
    ) -> None:
        self._host = broker_host
        self._port = broker_port
        self._credentials = credentials
        self._store = store if store is not None else ShadowStore()
        self._writer = _StateWriter(state_file) if state_file is not None else None
        self._publishes: set[asyncio.Task[None]] = set()
        self._save_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._sequence = 0
        self._last_save = float("-inf")

    @property
    def store(self) -> ShadowStore:
        return self._store

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        if self._writer is not None:
            snapshot = await asyncio.to_thread(self._writer.read)
            if snapshot is not None:
                try:
                    self._store.restore(snapshot)
                except ValueError as exc:
                    raise DevCloudError(f"invalid shadow state file: {exc}") from exc
                log.info("shadow_state_restored", shadows=len(snapshot.get("shadows", ())))
        tls = await asyncio.to_thread(client_ssl_context, self._credentials)
        identity = await asyncio.to_thread(certificate_common_name, self._credentials.cert)
        backoff = reconnect_backoff()
        try:
            while True:
                try:
                    async with _new_client(self._host, self._port, identity, tls) as client:
                        await client.subscribe([(topic, 1) for topic in _REQUEST_FILTERS])
                        log.info("shadow_service_ready", host=self._host, port=self._port)
                        backoff.reset()
                        if ready is not None:
                            ready.set()
                        async for message in client.messages:
                            self._dispatch(client, message)
                except aiomqtt.MqttError as exc:
                    delay = backoff.next_delay()
                    log.warning("shadow_service_disconnected", error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)
        finally:
            for task in list(self._publishes):
                task.cancel()
            if self._save_task is not None:
                self._save_task.cancel()
            if self._writer is not None:
                # Always: a cancelled save may have been mid-write, with _dirty already cleared.
                # The writer's lock and sequence number keep this final snapshot the one that wins.
                await self._save()

    def _dispatch(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Answer one request. Runs on the loop, synchronously: no thread hop, no sleep.

        No request may end the service: the store answers every one (a 500 for its own
        failures), and anything failing here drops that one request, logged by its shape.
        """
        topic = message.topic.value
        payload = _payload_bytes(message.payload)
        try:
            replies = [(r, _encode(r.payload)) for r in self._store.handle(topic, payload)]
        except Exception as exc:
            log.error(
                "shadow_request_dropped", topic=topic, size=len(payload), error=type(exc).__name__
            )
            return
        mutated = False
        for response, body in replies:
            reply_topic = response.topic
            code = response.payload.get("code") if reply_topic.endswith(_REJECTED_SUFFIX) else None
            if code in _HOSTILE_CODES:
                log.warning("shadow_request_rejected", topic=topic, size=len(payload), code=code)
            # Tasks start in creation order, and each hands its packet to paho before its
            # first await, so replies leave in arrival order without waiting for PUBACKs.
            task = asyncio.create_task(client.publish(reply_topic, body, 1))
            self._publishes.add(task)
            task.add_done_callback(self._publish_done)
            mutated = mutated or reply_topic.endswith(_MUTATING_REPLIES)
        if mutated and self._writer is not None:
            self._dirty = True
            if self._save_task is None or self._save_task.done():
                self._save_task = asyncio.create_task(self._save_soon())

    def _publish_done(self, task: asyncio.Task[None]) -> None:
        self._publishes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("shadow_reply_publish_failed", error=str(exc))

    async def _save_soon(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            wait = self._last_save + _SAVE_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._save()

    async def _save(self) -> None:
        assert self._writer is not None
        self._dirty = False
        self._sequence += 1
        self._last_save = asyncio.get_running_loop().time()
        # Snapshot on the loop (consistent, deep-copied); serialise and write in a thread.
        snapshot = self._store.snapshot()
        try:
            await asyncio.to_thread(self._writer.write, self._sequence, snapshot)
        except OSError as exc:
            self._dirty = True
            log.error("shadow_state_save_failed", error=str(exc))


class ShadowClient:
    """The cloud application's side of the shadows, over MQTT (connect as an admin identity).

    ``async with ShadowClient(host, port, creds) as client: await client.update(...)``
    """

    def __init__(
        self, host: str, port: int, credentials: Credentials, *, timeout: float = 10.0
    ) -> None:
        self._host = host
        self._port = port
        self._credentials = credentials
        self._timeout = timeout
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._pending: dict[str, asyncio.Future[tuple[bool, dict[str, Any]]]] = {}
        self._watchers: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self._error: BaseException | None = None

    async def __aenter__(self) -> Self:
        tls = await asyncio.to_thread(client_ssl_context, self._credentials)
        identity = await asyncio.to_thread(certificate_common_name, self._credentials.cert)
        # Client ids must be unique per connection; the ACL uses the certificate CN anyway.
        client = _new_client(self._host, self._port, f"{identity}-{uuid.uuid4().hex[:12]}", tls)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(client)
            await client.subscribe([(topic, 1) for topic in _REPLY_FILTERS])
            reader = asyncio.create_task(self._read(client))
            stack.push_async_callback(_cancel_and_wait, reader)
            self._stack = stack.pop_all()
        self._client = client
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client = None
        await self._stack.aclose()

    async def update(
        self,
        thing: str,
        state: dict[str, Any],
        *,
        shadow_name: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """Publish ``{"state": state}``; return ``update/accepted`` or raise ShadowRejectedError."""
        body: dict[str, Any] = {"state": state}
        if version is not None:
            body["version"] = version
        accepted, payload = await self._request(thing, shadow_name, "update", body)
        if not accepted:
            raise ShadowRejectedError(int(payload.get("code", 0)), str(payload.get("message")))
        return payload

    async def get(self, thing: str, shadow_name: str | None = None) -> dict[str, Any] | None:
        """The shadow document (``get/accepted``), or None if there is no such shadow."""
        return await self._request_or_none(thing, shadow_name, "get")

    async def wait_for(
        self,
        thing: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,  # noqa: ASYNC109  # part of the agreed API; applied with asyncio.timeout
        shadow_name: str | None = None,
    ) -> dict[str, Any]:
        """Wait until ``predicate(document)`` holds and return that document.

        Documents have the ``get`` shape (``state`` with desired/reported/delta, ``metadata``,
        ``version``, ``timestamp``): first from a get, then from each ``update/documents``.
        """
        prefix = shadow_prefix(thing, shadow_name)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # Watch before the get, so no update between the two can be missed.
        self._watchers.setdefault(prefix, set()).add(queue)
        last: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                last = await self.get(thing, shadow_name)
                if last is not None and predicate(last):
                    return last
                seen = last["version"] if last is not None else -1
                while True:
                    event = await queue.get()
                    if event is None:
                        raise DevCloudError(f"shadow client disconnected: {self._error}")
                    current = event["current"]  # a dict with an int version (see _route)
                    if current["version"] <= seen:
                        continue
                    last = _as_document(current, event.get("timestamp"))
                    seen = last["version"]
                    if predicate(last):
                        return last
        except TimeoutError as exc:
            raise ShadowTimeoutError(
                f"{prefix}: condition not met within {timeout} s; last document: {last}"
            ) from exc
        finally:
            watchers = self._watchers.get(prefix, set())
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(prefix, None)

    async def _request_or_none(
        self, thing: str, shadow_name: str | None, operation: str
    ) -> dict[str, Any] | None:
        accepted, payload = await self._request(thing, shadow_name, operation, {})
        if accepted:
            return payload
        if payload.get("code") == 404:
            return None
        raise ShadowRejectedError(int(payload.get("code", 0)), str(payload.get("message")))

    async def _request(
        self, thing: str, shadow_name: str | None, operation: str, body: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        if self._client is None:
            raise DevCloudError("ShadowClient is not connected (use 'async with')")
        if self._error is not None:
            raise DevCloudError(f"shadow client disconnected: {self._error}")
        token = uuid.uuid4().hex
        future: asyncio.Future[tuple[bool, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[token] = future
        topic = f"{shadow_prefix(thing, shadow_name)}/{operation}"
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(topic, _encode({**body, "clientToken": token}), 1)
                return await future
        except TimeoutError as exc:
            raise ShadowTimeoutError(f"no reply to {topic} within {self._timeout} s") from exc
        finally:
            self._pending.pop(token, None)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                try:
                    self._route(message.topic.value, _payload_bytes(message.payload))
                except Exception as exc:  # one reply must not end the reader
                    log.error(
                        "shadow_client_reply_dropped",
                        topic=message.topic.value,
                        error=type(exc).__name__,
                    )
        except aiomqtt.MqttError as exc:
            self._error = exc
            log.warning("shadow_client_disconnected", error=str(exc))
            error = DevCloudError(f"shadow client disconnected: {exc}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            for queues in self._watchers.values():
                for queue in queues:
                    queue.put_nowait(None)

    def _route(self, topic: str, payload: bytes) -> None:
        """Hand one reply to its waiter. Things may publish on their own reply topics too, so a
        reply is hostile input: bounded before parsing, and a bad one is dropped, never raised."""
        try:
            body = loads_bounded(payload, max_nesting=REPLY_NESTING, max_bytes=MAX_REPLY_BYTES)
        except ShadowRequestError as exc:
            log.warning(
                "shadow_client_invalid_reply", topic=topic, size=len(payload), code=exc.code
            )
            return
        if not isinstance(body, dict):
            return
        if topic.endswith(_DOCUMENTS_SUFFIX):
            current = body.get("current")
            if not isinstance(current, dict) or not isinstance(current.get("state"), dict | None):
                return
            version = current.get("version")
            if isinstance(version, bool) or not isinstance(version, int):
                return
            for queue in self._watchers.get(topic[: -len(_DOCUMENTS_SUFFIX)], ()):
                queue.put_nowait(body)
            return
        token = body.get("clientToken")
        future = self._pending.get(token) if isinstance(token, str) else None
        if future is not None and not future.done():
            future.set_result((topic.endswith("/accepted"), body))


def _as_document(current: dict[str, Any], timestamp: object) -> dict[str, Any]:
    """An ``update/documents`` "current" in the ``get/accepted`` shape (with delta)."""
    state = dict(current.get("state") or {})
    desired, reported = state.get("desired"), state.get("reported")
    delta = compute_delta(
        desired if isinstance(desired, dict) else {}, reported if isinstance(reported, dict) else {}
    )
    if delta:
        state["delta"] = delta
    return {
        "state": state,
        "metadata": current.get("metadata") or {},
        "version": current["version"],
        "timestamp": timestamp,
    }


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    # asyncio.wait does not re-raise the task's CancelledError, but still lets ours through.
    await asyncio.wait([task])
