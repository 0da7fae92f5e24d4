"""What the dashboard shows, kept live from the broker: things, status, shadows, event logs.

The hub connects as an admin identity, subscribes to ``things/+/status`` (the gateways' retained
``online``/``offline`` with a Last Will) and the shadows' ``update/documents`` and replies, and
fans every change out to the dashboard's browsers (one queue per Server-Sent Events stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiomqtt
import structlog

from gateway.devcloud.pki import (
    Credentials,
    certificate_common_name,
    client_ssl_context,
)
from gateway.devcloud.service import (
    MAX_REPLY_BYTES,
    REPLY_NESTING,
    ShadowRejectedError,
    _new_client,
    _payload_bytes,
    reconnect_backoff,
)
from gateway.devcloud.shadowdoc import (
    ShadowRequestError,
    ShadowStore,
    compute_delta,
    loads_bounded,
    parse_topic,
    shadow_prefix,
)
from gateway.devcloud.web.history import History

__all__ = ["CLASSIC", "DashboardHub", "DesiredRejectedError"]

CLASSIC: Final = ""  # the key of the classic (unnamed) shadow in a thing's "shadows"
_FILTERS: Final = (
    "things/+/status",
    "$aws/things/+/shadow/update/documents",
    "$aws/things/+/shadow/name/+/update/documents",
    "$aws/things/+/shadow/update/accepted",
    "$aws/things/+/shadow/update/rejected",
    "$aws/things/+/shadow/name/+/update/accepted",
    "$aws/things/+/shadow/name/+/update/rejected",
    "$aws/things/+/shadow/delete/accepted",
    "$aws/things/+/shadow/name/+/delete/accepted",
)
_LOG_LENGTH: Final = 200
_QUEUE_SIZE: Final = 1000
_REQUEST_TIMEOUT: Final = 5.0
_STATUSES: Final = ("online", "offline")
_MAX_STATUS_BYTES: Final = 4096
_MAX_EVENT_CHARS: Final = 300

log = structlog.get_logger()


class DesiredRejectedError(ShadowRejectedError):
    """The shadow service refused (or did not answer) a desired update from the dashboard."""


@dataclass
class _Thing:
    name: str
    status: str = "unknown"
    status_at: float | None = None
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkin: dict[str, Any] | None = None
    thinx: dict[str, Any] | None = None  # the THiNX device of this name (its alias)
    certificates: int = 0
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_LOG_LENGTH))
    history: History = field(default_factory=History)

    def view(self, *, with_events: bool, now: float = 0.0) -> dict[str, Any]:
        """The thing as the dashboard's feed sends it; ``with_events`` adds the event log and
        the charts' history (a snapshot), which ``thing`` changes leave out."""
        data: dict[str, Any] = {
            "thing": self.name,
            "status": self.status,
            "status_at": self.status_at,
            "shadows": self.shadows,
            "controls": self.controls,
            "checkin": self.checkin,
            "thinx": self.thinx,
            "certificates": self.certificates,
        }
        if with_events:
            data["events"] = list(self.events)
            data["history"] = self.history.view(now)
        return data


def _document(state: Mapping[str, Any], version: int, timestamp: object) -> dict[str, Any]:
    desired = dict(state.get("desired") or {})
    reported = dict(state.get("reported") or {})
    return {
        "desired": desired,
        "reported": reported,
        "delta": compute_delta(desired, reported),
        "version": version,
        "timestamp": timestamp,
    }


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``key=value`` for keys whose value changed (``gateway`` summarised), sorted."""
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            if key == "gateway":
                out.append("gateway status")
            elif key not in after:
                out.append(f"{key} cleared")
            else:
                out.append(f"{key}={json.dumps(after[key], separators=(',', ':'))}")
    return out


class DashboardHub:
    """The dashboard's live model of the dev cloud, fed by the broker."""

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        credentials: Credentials,
        *,
        store: ShadowStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = broker_host
        self._clock = clock
        self._port = broker_port
        self._credentials = credentials
        self._store = store
        self._things: dict[str, _Thing] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[tuple[bool, dict[str, Any]]]] = {}
        self.connected = asyncio.Event()

    # --- the model ------------------------------------------------------------------------------

    def things(self) -> list[dict[str, Any]]:
        """Every thing with its recent events, sorted by name."""
        now = self._clock()
        return [self._things[name].view(with_events=True, now=now) for name in sorted(self._things)]

    def knows(self, name: str) -> bool:
        """Whether a thing is known: made by a batch, connected once, or has a shadow."""
        return name in self._things

    def thing(self, name: str) -> dict[str, Any] | None:
        thing = self._things.get(name)
        return thing.view(with_events=True, now=self._clock()) if thing is not None else None

    def add_thing(self, name: str, controls: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Make a thing known (before it ever connects), with control hints per shadow key."""
        thing = self._thing(name)
        if controls is not None:
            thing.controls = {key: dict(value) for key, value in controls.items()}
        self._changed(thing)

    def record(self, name: str, kind: str, details: Mapping[str, Any]) -> None:
        """Provision API events: ``checkin`` (OTA check-in) or ``certificate`` (getCerts)."""
        thing = self._thing(name)
        if kind == "checkin":
            thing.checkin = dict(details)
            offer = details.get("offer") or {}
            offered = f"offered {offer.get('version')}" if offer else "no update offered"
            self._event(
                thing, "checkin", f"check-in at version {details.get('version')}, {offered}"
            )
        elif kind == "certificate":
            thing.certificates += 1
            self._event(thing, "provision", f"certificate issued for claim {details.get('claim')}")
        self._changed(thing)

    def record_thinx(self, udid: str, kind: str, details: Mapping[str, Any]) -> None:
        """THiNX server events (``checkin``, ``status``): the device is shown under its alias
        (a gateway whose alias is its thing name shares the thing's entry), else its udid."""
        alias = details.get("alias")
        thing = self._thing(str(alias) if isinstance(alias, str) and alias else udid)
        fields = ("udid", "owner", "version", "firmware", "platform", "status", "auto_update")
        thing.thinx = {key: details.get(key) for key in fields}
        thing.thinx["last_checkin"] = details.get("lastupdate")
        status = details.get("status")
        if kind == "checkin":
            self._event(thing, "thinx", f"THiNX check-in at version {details.get('version')}")
        elif kind == "status":
            self._event(thing, "thinx", f"THiNX status: {status}")
        if not thing.shadows and thing.status_at is None and isinstance(status, str):
            thing.status = "offline" if status == "disconnected" else "online"  # THiNX only
        self._changed(thing)

    def _thing(self, name: str) -> _Thing:
        thing = self._things.get(name)
        if thing is None:
            thing = self._things[name] = _Thing(name)
        return thing

    def _event(self, thing: _Thing, kind: str, text: str) -> None:
        if len(text) > _MAX_EVENT_CHARS:
            # Replies a thing publishes itself may carry anything: keep the log's memory bounded.
            text = text[: _MAX_EVENT_CHARS - 1] + "…"
        entry = {"at": self._clock(), "kind": kind, "text": text}
        thing.events.append(entry)
        self._broadcast({"type": "event", "thing": thing.name, "event": entry})

    def _changed(self, thing: _Thing) -> None:
        self._broadcast({"type": "thing", "thing": thing.view(with_events=False)})

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every browser stream (other dev cloud parts, e.g. MindConnect)."""
        self._broadcast(message)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # A browser that stopped reading: end its stream; it reconnects with a snapshot.
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue receiving a ``snapshot`` first, then every change (None: stream ended)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        queue.put_nowait({"type": "snapshot", "now": self._clock(), "things": self.things()})
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def close_streams(self) -> None:
        """End every browser stream (before the HTTP server shuts down)."""
        for queue in list(self._subscribers):
            self._subscribers.discard(queue)
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(None)

    def _seed(self) -> None:
        """Load every existing shadow from the in-process store (there is no list-shadows topic)."""
        if self._store is None:
            return
        for item in self._store.snapshot()["shadows"]:
            if not item["exists"]:
                continue
            thing = self._thing(str(item["thing"]))
            state = {"desired": item["desired"], "reported": item["reported"]}
            key = item["name"] or CLASSIC
            document = _document(state, int(item["version"]), item["timestamp"])
            thing.shadows[key] = document
            # A restarted dev cloud starts each chart with the value it has now.
            self._plot(thing, key, {}, document["reported"], "reported")

    # --- the broker -----------------------------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Follow the broker until cancelled, reconnecting when it goes away."""
        self._seed()
        tls = await asyncio.to_thread(client_ssl_context, self._credentials)
        identity = await asyncio.to_thread(certificate_common_name, self._credentials.cert)
        backoff = reconnect_backoff()
        while True:
            client_id = f"{identity}-dashboard-{uuid.uuid4().hex[:8]}"
            try:
                async with _new_client(self._host, self._port, client_id, tls) as client:
                    await client.subscribe([(topic, 1) for topic in _FILTERS])
                    self._client = client
                    self.connected.set()
                    backoff.reset()
                    log.info("dashboard_feed_connected", host=self._host, port=self._port)
                    if ready is not None:
                        ready.set()
                    async for message in client.messages:
                        self._receive(message.topic.value, _payload_bytes(message.payload))
            except aiomqtt.MqttError as exc:
                delay = backoff.next_delay()
                log.warning("dashboard_feed_disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
            finally:
                self._client = None
                self.connected.clear()
                error = DesiredRejectedError(503, "dashboard lost its broker connection")
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(error)

    async def update_desired(
        self, thing: str, desired: Mapping[str, Any], shadow: str | None = None
    ) -> int:
        """Set desired keys; return the new shadow version or raise DesiredRejectedError."""
        client = self._client
        if client is None:
            raise DesiredRejectedError(503, "dashboard is not connected to the broker")
        token = uuid.uuid4().hex
        body = {"state": {"desired": dict(desired)}, "clientToken": token}
        topic = f"{shadow_prefix(thing, shadow)}/update"
        try:
            # allow_nan=False: a NaN or infinity is not JSON; refuse it as the shadow would.
            payload = json.dumps(body, allow_nan=False).encode()
        except ValueError as exc:
            raise DesiredRejectedError(400, "Payload contains invalid json") from exc
        future: asyncio.Future[tuple[bool, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[token] = future
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                await client.publish(topic, payload, 1)
                accepted, reply = await future
        except TimeoutError as exc:
            raise DesiredRejectedError(504, f"no reply on {topic}/accepted|rejected") from exc
        except aiomqtt.MqttError as exc:
            raise DesiredRejectedError(503, str(exc)) from exc
        finally:
            self._pending.pop(token, None)
        # The reply comes off the broker: a thing can see the token and answer in the service's
        # place, so its fields are checked, not trusted.
        code, version = reply.get("code"), reply.get("version")
        if not accepted:
            code = code if isinstance(code, int) and 400 <= code < 600 else 502
            raise DesiredRejectedError(code, str(reply.get("message"))[:_MAX_EVENT_CHARS])
        if isinstance(version, bool) or not isinstance(version, int):
            raise DesiredRejectedError(502, "the shadow service's reply has no version")
        return version

    def _receive(self, topic: str, payload: bytes) -> None:
        """Things may publish on their own status and shadow reply topics: every message is
        hostile input, and one that fails is dropped (logged by its shape), never raised."""
        try:
            self._on_message(topic, payload)
        except ShadowRequestError as exc:
            log.warning("dashboard_message_refused", topic=topic, size=len(payload), code=exc.code)
        except Exception as exc:
            log.error(
                "dashboard_message_dropped",
                topic=topic,
                size=len(payload),
                error=type(exc).__name__,
            )

    def _on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == "things" and parts[2] == "status":
            self._on_status(parts[1], payload)
            return
        parsed = parse_topic(topic.rsplit("/", 1)[0])
        if parsed is None:
            return
        body = loads_bounded(payload, max_nesting=REPLY_NESTING, max_bytes=MAX_REPLY_BYTES)
        if not isinstance(body, dict):
            return
        suffix = parts[-1]
        thing = self._thing(parsed.thing)
        key = parsed.name or CLASSIC
        if parsed.operation == "update" and suffix == "documents":
            self._on_documents(thing, key, body)
        elif parsed.operation == "delete" and suffix == "accepted":
            thing.shadows.pop(key, None)
            thing.history.forget(key)
            self._event(thing, "shadow", "shadow deleted")
            self._changed(thing)
        elif parsed.operation == "update" and suffix in ("accepted", "rejected"):
            token = body.get("clientToken")
            future = self._pending.get(token) if isinstance(token, str) else None
            if future is not None and not future.done():
                future.set_result((suffix == "accepted", body))
            if suffix == "rejected":
                message = f"update rejected: {body.get('code')} {body.get('message')}"
                self._event(thing, "error", message)

    def _on_status(self, name: str, payload: bytes) -> None:
        if len(payload) > _MAX_STATUS_BYTES:
            raise ShadowRequestError(413, "status message too large")
        text = payload.decode(errors="replace").strip()
        status = text.lower()
        if text.startswith("{"):
            body = loads_bounded(payload, max_nesting=REPLY_NESTING)
            status = str(body.get("status", "")).lower() if isinstance(body, dict) else ""
        thing = self._thing(name)
        status = status if status in _STATUSES else "unknown"
        if status == thing.status:
            return
        thing.status = status
        thing.status_at = self._clock()
        self._event(thing, "status", status)
        self._changed(thing)

    def _on_documents(self, thing: _Thing, key: str, body: Mapping[str, Any]) -> None:
        current = body.get("current")
        if not isinstance(current, dict) or not isinstance(current.get("version"), int):
            return
        previous = thing.shadows.get(key)
        if previous is not None and previous["version"] >= current["version"]:
            return
        state = current.get("state") or {}
        document = _document(state, current["version"], body.get("timestamp"))
        before_desired = previous["desired"] if previous is not None else {}
        before_reported = previous["reported"] if previous is not None else {}
        thing.shadows[key] = document
        points = self._plot(thing, key, before_desired, document["desired"], "desired")
        points += self._plot(thing, key, before_reported, document["reported"], "reported")
        if points:
            self._broadcast(
                {"type": "points", "thing": thing.name, "now": self._clock(), "points": points}
            )
        label = f"[{key}] " if key else ""
        if changed := _changes(before_desired, document["desired"]):
            self._event(thing, "desired", f"{label}desired " + ", ".join(changed))
        if changed := _changes(before_reported, document["reported"]):
            self._event(thing, "reported", f"{label}reported " + ", ".join(changed))
        self._changed(thing)

    def _plot(
        self,
        thing: _Thing,
        shadow: str,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        kind: Literal["reported", "desired"],
    ) -> list[dict[str, object]]:
        """Record the values that changed (a desired key set to null marks nothing)."""
        now = self._clock()
        points = []
        for key, value in after.items():
            if key == "gateway" or (key in before and before[key] == value):
                continue
            point = thing.history.add(shadow, key, kind, now, value)
            if point is not None:
                points.append(point)
        return points
