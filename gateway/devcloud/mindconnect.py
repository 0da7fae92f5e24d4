"""The dev cloud's MindConnect side: a stand-in for Siemens Insights Hub's MindConnect MQTT.

What it fakes, from Siemens' public sources (each field's source is named where it is built):

- a **tenant** (default ``devtenant``) with its own CA (``<state>/ca/``, a `DevCA` whose CN is the
  tenant name, as in Siemens' own-CA sample certificates) and one **app credential**
  (``app.json``: ``appId`` ``<tenant>-<appName>-<appVersion>``, the form Siemens' sample splits,
  and ``appSecret``);
- ``POST /api/technicaltokenmanager/v3/oauth/token`` (`MindConnectTenant.issue_token`): header
  ``X-SPACE-AUTH-KEY: Bearer|Basic base64(appId:appSecret)``, JSON body ``{"grant_type":
  "client_credentials" (optional), "appName", "appVersion", "hostTenant", "userTenant"}`` ->
  200 ``{"access_token", "token_type": "Bearer", "expires_in": 1800}``; 401 for wrong
  credentials, 400 for a malformed body. Tokens are opaque and live 30 minutes;
- ``POST /api/mindconnectmqtt/v3/agentCertificates`` (`MindConnectTenant.issue_agent_certificate`):
  ``Authorization: Bearer <access_token>``, body ``{"name": NAME, "owner": ... (optional)}`` ->
  201 with a new RSA key and a certificate (CN = NAME) from the tenant CA, client id
  ``<tenant>_<NAME>``. Two answer shapes (``answer_shape``):

  - ``"documentation"`` (default): ``{"id", "name", "agentName", "owner" (when given), "agentId",
    "clientId", "privateKey", "publicKey" (the certificate PEM), "status": "READY"}``;
  - ``"sample"``: ``{"clientId", "credentials": {"certificatePem", "privateKey"}}``.

  401 without a valid token, 400 for a bad name (``[A-Za-z0-9][A-Za-z0-9.-]{0,63}``, a dev cloud
  rule) or one reserved by the broker. Asking again for a name issues a new pair;
- the **broker** (`MosquittoBroker.add_mindconnect_tenant`): trusts the tenant CA and gives an
  agent (username = certificate CN) only ``tc/<tenant>/<tenant>_<CN>/#``. mosquitto cannot refuse
  a client id other than ``<tenant>_<CN>``: `MindConnectSide.connections` reads what each agent
  connected with (client id, clean session, keepalive) from mosquitto's log instead;
- the **store** (`MindConnectStore`): as the admin identity the side subscribes to
  ``tc/<tenant>/+/o/#`` and keeps, per client id, bounded histories of time series points
  (``o/mc_v3/ts``), events (``o/mc_v3/e``) and command answers (``o/cmd_v3/u``), each payload
  checked against the documented shape (refusals are kept too, with their reason);
- **commands**: `MindConnectSide.send_command` publishes ``{"id", "data": {"jobId", "payload"}}``
  on ``tc/<tenant>/<clientId>/i/cmd_v3/c``; `MindConnectSide.wait_for_answer` waits for the
  agent's ``{"id", "requestId", "data": {"timestamp", "jobId", "status", "response"}}``;
- an environment's **own CA** (`MindConnectSide.register_own_ca`): a verification certificate
  whose CN is ``tenant.registration_code``, signed by the CA; at most two, no intermediates
  (Siemens' "Managing CA Certificates using MindConnect MQTT API"); the broker is restarted to
  trust it. Siemens' CA upload API itself is not faked.

Python API for tests (stable; everything blocking is marked so)::

    tenant = MindConnectTenant(state_dir / "mindconnect")          # blocking: creates CA, app
    broker.add_mindconnect_tenant(tenant.name, tenant.ca.cert_path)  # before broker.start()
    side = MindConnectSide(tenant, broker)                          # admin identity of broker
    task = asyncio.create_task(side.run(ready=ready_event))          # subscribes, keeps the store
    app = web.Application(); add_mindconnect_routes(app, side)       # the two HTTPS endpoints
    token = tenant.issue_token(tenant.auth_key(), tenant.token_request())["access_token"]
    answer = tenant.issue_agent_certificate("pi1", token=token)     # blocking
    creds = write_agent_credentials(answer, folder, broker_ca=...)  # cert.pem, privkey.pem 0600
    side.store.latest("devtenant_pi1")        # {dataPointId: TimeSeriesPoint}
    await side.wait_for_points("devtenant_pi1", 3, timeout_s=5)
    sent = await side.send_command("devtenant_pi1", {"commandType": "set", ...})
    answer = await side.wait_for_answer(sent.id, timeout_s=5)          # CommandAnswer
    side.connections()                         # blocking: [AgentConnection] from mosquitto's log
    await side.register_own_ca(ca_pem, verification_pem)   # own CA; restarts the broker

With ``DevCloud`` (below) use ``cloud.mindconnect`` as ``side``, ``cloud.provision_url`` as the
gateway URL, ``side.broker_ca`` as the broker's CA and ``side.tenant.app_id`` /
``side.tenant.app_secret`` as the app credential (tests/integration/test_mindconnect_devcloud.py
shows each step over real HTTPS and mosquitto).

``DevCloud`` (``edge-gateway devcloud``) builds all of this: ``cloud.mindconnect`` is the side,
the endpoints are on the Provision API's HTTPS address, and the dashboard's HTTP API offers
``GET /api/mindconnect``, ``GET /api/mindconnect/agents/<clientId>``, ``POST
/api/mindconnect/agents/<clientId>/commands`` and ``POST /api/mindconnect/cas`` (see
docs/devcloud.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import datetime as dt
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import aiomqtt
import structlog
from aiohttp import web
from cryptography.exceptions import InvalidSignature

from gateway.core.atomicfile import write_atomic
from gateway.devcloud.broker import MosquittoBroker
from gateway.devcloud.pki import (
    Credentials,
    DevCA,
    DevCloudError,
    certificate_common_name,
    client_ssl_context,
    read_json_object,
)
from gateway.devcloud.service import _new_client, _payload_bytes, reconnect_backoff
from gateway.devcloud.shadowdoc import ShadowRequestError, loads_bounded

__all__ = [
    "ANSWER_SHAPES",
    "DEFAULT_TENANT",
    "MAX_MESSAGE_BYTES",
    "TOKEN_LIFETIME_S",
    "AgentConnection",
    "AgentEvent",
    "AnswerShape",
    "CommandAnswer",
    "MindConnectAuthError",
    "MindConnectError",
    "MindConnectRequestError",
    "MindConnectSide",
    "MindConnectStore",
    "MindConnectTenant",
    "Refusal",
    "SentCommand",
    "TimeSeriesPoint",
    "add_mindconnect_routes",
    "agent_topic",
    "write_agent_credentials",
]

DEFAULT_TENANT: Final = "devtenant"
AnswerShape = Literal["documentation", "sample"]
ANSWER_SHAPES: Final[tuple[AnswerShape, ...]] = ("documentation", "sample")
# "Every technical token is valid for 30 minutes" (Siemens, MindSphere SDK for Python - Token
# Handling, developer.mindsphere.io/resources/mindsphere-sdk-python/token_handling.html).
TOKEN_LIFETIME_S: Final = 1800.0
# Siemens publishes no size limit for MindConnect MQTT messages. Its auto-generated agent
# certificates are issued by AWS IoT (issuer "Amazon Web Services O=Amazon.com Inc." in the
# sample's agent_cert/asmten1_raspiakmachine.pem), so AWS IoT Core's 128 KB payload limit is
# assumed: a bigger message is refused by the store.
MAX_MESSAGE_BYTES: Final = 128 * 1024
# JSON depth of the documented payloads: {"timeseries": [{"values": [{...}]}]} is 4 levels;
# an event's "details" object may nest a little.
_MAX_NESTING: Final = 8
_HISTORY_POINTS: Final = 2000
_HISTORY_EVENTS: Final = 200
_HISTORY_ANSWERS: Final = 200
_HISTORY_REFUSALS: Final = 100
_MAX_AGENTS: Final = 1000
_MAX_OWN_CAS: Final = 2  # "You can upload up to two X.509 based public certificates" (Siemens)
_MAX_BODY: Final = 16 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
# ISO 8601 UTC with a Z: Siemens' samples use milliseconds ("2020-08-01T00:15:10.100Z", MindConnect
# Async API samples) and Python's %f (microseconds, mindconnect-mqtt MindConnectClient.py).
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
_STATUSES: Final = frozenset({"EXECUTING", "EXECUTED", "FAILED"})  # mindconnect-mqtt samples
# mosquitto 2.x: "New client connected from 127.0.0.1:40000 as ID (p2, c0, k60, u'CN')."
_CONNECTED = re.compile(
    r"^(?P<at>\S+): New client connected from \S+ as (?P<client>\S+) "
    r"\(p\d+, c(?P<clean>[01]), k(?P<keepalive>\d+)(?:, u'(?P<user>[^']*)')?\)"
)
_REQUEST_TIMEOUT: Final = 10.0

log = structlog.get_logger()


class MindConnectError(DevCloudError):
    """The MindConnect side cannot do what was asked (not connected, unknown command, ...)."""


class MindConnectAuthError(MindConnectError):
    """Wrong or missing app credentials or access token (HTTP 401)."""


class MindConnectRequestError(MindConnectError):
    """A malformed request (HTTP 400)."""


def agent_topic(tenant: str, client_id: str, suffix: str) -> str:
    """``tc/<tenant>/<clientId>/<suffix>``, e.g. suffix ``o/mc_v3/ts``."""
    return f"tc/{tenant}/{client_id}/{suffix}"


def _parse_timestamp(value: object, where: str) -> dt.datetime:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise MindConnectRequestError(f"{where}: timestamp must be ISO 8601 UTC ending in Z")
    try:
        return dt.datetime.fromisoformat(value[:-1][:26]).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise MindConnectRequestError(f"{where}: timestamp is not a valid date") from exc


# --- what the store keeps ---------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSeriesPoint:
    """One value of a time series message (``timeseries[].values[]``)."""

    data_point_id: str
    value: str
    quality_code: str
    timestamp: str  # as sent
    observed_at: dt.datetime  # the timestamp, parsed (UTC)
    received_at: float  # when the dev cloud received it (epoch seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "dataPointId": self.data_point_id,
            "value": self.value,
            "qualityCode": self.quality_code,
            "timestamp": self.timestamp,
            "receivedAt": self.received_at,
        }


@dataclass(frozen=True)
class AgentEvent:
    """One event of an events message (its fields as sent)."""

    fields: Mapping[str, Any]
    observed_at: dt.datetime
    received_at: float

    def as_json(self) -> dict[str, Any]:
        return {**self.fields, "receivedAt": self.received_at}


@dataclass(frozen=True)
class CommandAnswer:
    """An agent's answer on ``o/cmd_v3/u`` (the whole message as sent)."""

    message: Mapping[str, Any]
    received_at: float

    @property
    def request_id(self) -> str:
        return str(self.message["requestId"])

    @property
    def job_id(self) -> str:
        return str(self.message["data"]["jobId"])

    @property
    def status(self) -> str:
        return str(self.message["data"]["status"])

    @property
    def response(self) -> Any:
        return self.message["data"].get("response")

    def as_json(self) -> dict[str, Any]:
        return {**self.message, "receivedAt": self.received_at}


@dataclass(frozen=True)
class SentCommand:
    """A command the dev cloud published (``{"id", "data": {"jobId", "payload"}}``)."""

    id: str
    job_id: str
    client_id: str
    payload: Mapping[str, Any]
    sent_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "jobId": self.job_id,
            "clientId": self.client_id,
            "payload": dict(self.payload),
            "sentAt": self.sent_at,
        }


@dataclass(frozen=True)
class Refusal:
    """A message that did not have the documented shape, and why (no payload kept)."""

    topic: str
    reason: str
    size: int
    received_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "reason": self.reason,
            "size": self.size,
            "receivedAt": self.received_at,
        }


@dataclass(frozen=True)
class AgentConnection:
    """One CONNECT of a tenant's agent, as mosquitto logged it."""

    client_id: str
    username: str | None  # the certificate CN
    clean_session: bool
    keepalive: int
    logged_at: str
    tenant: str = DEFAULT_TENANT

    @property
    def client_id_matches(self) -> bool:
        """Whether the client id is ``<tenant>_<CN>``, as MindConnect requires."""
        return self.username is not None and self.client_id == f"{self.tenant}_{self.username}"


@dataclass
class _Agent:
    points: collections.deque[TimeSeriesPoint] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY_POINTS)
    )
    latest: dict[str, TimeSeriesPoint] = field(default_factory=dict)
    events: collections.deque[AgentEvent] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY_EVENTS)
    )
    answers: collections.deque[CommandAnswer] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY_ANSWERS)
    )
    commands: collections.deque[SentCommand] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY_ANSWERS)
    )
    refusals: collections.deque[Refusal] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY_REFUSALS)
    )
    messages: int = 0


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise MindConnectRequestError(f"{where} must be a string")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MindConnectRequestError(f"{where} must be an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise MindConnectRequestError(f"{where} must be a non-empty array")
    return value


def parse_timeseries(body: object, received_at: float) -> list[TimeSeriesPoint]:
    """The points of ``{"timeseries": [{"timestamp", "values": [{"dataPointId", "value",
    "qualityCode"}]}]}`` (MindConnect Async API samples; value and qualityCode are strings)."""
    points = []
    for i, raw_sample in enumerate(_list(_object(body, "message").get("timeseries"), "timeseries")):
        where = f"timeseries[{i}]"
        sample = _object(raw_sample, where)
        observed = _parse_timestamp(sample.get("timestamp"), where)
        for j, raw_item in enumerate(_list(sample.get("values"), f"{where}.values")):
            item = _object(raw_item, f"{where}.values[{j}]")
            point_id = _string(item.get("dataPointId"), f"{where}.values[{j}].dataPointId")
            if not point_id:
                raise MindConnectRequestError(f"{where}.values[{j}].dataPointId is empty")
            points.append(
                TimeSeriesPoint(
                    data_point_id=point_id,
                    value=_string(item.get("value"), f"{where}.values[{j}].value"),
                    quality_code=_string(
                        item.get("qualityCode"), f"{where}.values[{j}].qualityCode"
                    ),
                    timestamp=sample["timestamp"],
                    observed_at=observed,
                    received_at=received_at,
                )
            )
    return points


# Event fields of mindconnect-mqtt's example_json/event.json (and issue 17's list); "details"
# holds the event type's custom fields.
_EVENT_STRINGS: Final = ("id", "correlationId", "type", "description")


def parse_events(body: object, received_at: float) -> list[AgentEvent]:
    """The events of ``{"events": [{"id", "correlationId", "timestamp", "severity", "type",
    "description", "details"}]}``: timestamp and type required, the rest typed when present.
    Severity: the sample sends it as a string of digits ("20"), a number is accepted too."""
    events = []
    for i, raw_event in enumerate(_list(_object(body, "message").get("events"), "events")):
        where = f"events[{i}]"
        event = _object(raw_event, where)
        observed = _parse_timestamp(event.get("timestamp"), where)
        if "type" not in event:
            raise MindConnectRequestError(f"{where}.type is missing")
        for key in _EVENT_STRINGS:
            if key in event:
                _string(event[key], f"{where}.{key}")
        severity = event.get("severity")
        if severity is not None and not (
            (isinstance(severity, int) and not isinstance(severity, bool))
            or (isinstance(severity, str) and severity.isdigit())
        ):
            raise MindConnectRequestError(f"{where}.severity must be a number")
        if "details" in event:
            _object(event["details"], f"{where}.details")
        events.append(AgentEvent(fields=dict(event), observed_at=observed, received_at=received_at))
    return events


def parse_answer(body: object, received_at: float) -> CommandAnswer:
    """``{"id", "requestId", "data": {"timestamp", "jobId", "status", "response"}}``
    (mindconnect-mqtt MindConnectClient.py; status EXECUTING, EXECUTED or FAILED)."""
    message = _object(body, "message")
    _string(message.get("id"), "id")
    _string(message.get("requestId"), "requestId")
    data = _object(message.get("data"), "data")
    _parse_timestamp(data.get("timestamp"), "data")
    _string(data.get("jobId"), "data.jobId")
    status = _string(data.get("status"), "data.status")
    if status not in _STATUSES:
        raise MindConnectRequestError(f"data.status must be one of {sorted(_STATUSES)}")
    if "response" in data:
        _object(data["response"], "data.response")
    return CommandAnswer(message=message, received_at=received_at)


class MindConnectStore:
    """What the tenant's agents sent, per client id, with bounded history (pure, no I/O)."""

    def __init__(self, tenant: str, *, clock: Callable[[], float] = time.time) -> None:
        self.tenant = tenant
        self._clock = clock
        self._agents: dict[str, _Agent] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self.listeners: list[Callable[[str, str], None]] = []  # (client id, kind) after a change

    def agents(self) -> list[str]:
        """Client ids that sent something (or were sent a command), sorted."""
        return sorted(self._agents)

    def latest(self, client_id: str) -> dict[str, TimeSeriesPoint]:
        """The last value of each data point (by observation time, then arrival)."""
        agent = self._agents.get(client_id)
        return dict(agent.latest) if agent else {}

    def points(self, client_id: str, data_point_id: str | None = None) -> list[TimeSeriesPoint]:
        """Every kept point in arrival order, optionally of one data point."""
        agent = self._agents.get(client_id)
        if agent is None:
            return []
        return [p for p in agent.points if data_point_id in (None, p.data_point_id)]

    def events(self, client_id: str) -> list[AgentEvent]:
        agent = self._agents.get(client_id)
        return list(agent.events) if agent else []

    def answers(self, client_id: str) -> list[CommandAnswer]:
        agent = self._agents.get(client_id)
        return list(agent.answers) if agent else []

    def commands(self, client_id: str) -> list[SentCommand]:
        agent = self._agents.get(client_id)
        return list(agent.commands) if agent else []

    def refusals(self, client_id: str) -> list[Refusal]:
        agent = self._agents.get(client_id)
        return list(agent.refusals) if agent else []

    def answer_to(self, command_id: str) -> CommandAnswer | None:
        """The last answer whose requestId is ``command_id``."""
        for agent in self._agents.values():
            for answer in reversed(agent.answers):
                if answer.request_id == command_id:
                    return answer
        return None

    def view(self, client_id: str) -> dict[str, Any]:
        """JSON-ready summary of one agent (the dashboard's and the HTTP API's)."""
        agent = self._agents.get(client_id) or _Agent()
        return {
            "clientId": client_id,
            "messages": agent.messages,
            "latest": {k: v.as_json() for k, v in sorted(agent.latest.items())},
            "events": [e.as_json() for e in list(agent.events)[-20:]],
            "commands": [c.as_json() for c in list(agent.commands)[-20:]],
            "answers": [a.as_json() for a in list(agent.answers)[-20:]],
            "refusals": [r.as_json() for r in list(agent.refusals)[-20:]],
        }

    def record_command(self, command: SentCommand) -> None:
        agent = self._agent(command.client_id)
        if agent is not None:
            agent.commands.append(command)
            self._notify(command.client_id, "command")

    def receive(self, topic: str, payload: bytes) -> str | None:
        """File one message from ``tc/<tenant>/<clientId>/o/...``; return its kind (``ts``,
        ``event``, ``answer``), or None when it is refused (kept as a `Refusal`) or ignored."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != "tc" or parts[1] != self.tenant or parts[3] != "o":
            return None
        client_id, suffix = parts[2], "/".join(parts[4:])
        agent = self._agent(client_id)
        if agent is None:
            return None
        now = self._clock()
        agent.messages += 1
        try:
            if len(payload) > MAX_MESSAGE_BYTES:
                raise MindConnectRequestError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
            try:
                body = loads_bounded(payload, max_nesting=_MAX_NESTING, max_bytes=MAX_MESSAGE_BYTES)
            except ShadowRequestError as exc:
                raise MindConnectRequestError(exc.message) from exc
            kind = self._file(agent, suffix, body, now)
        except MindConnectRequestError as exc:
            agent.refusals.append(Refusal(topic, str(exc), len(payload), now))
            log.warning("mindconnect_message_refused", topic=topic, size=len(payload))
            self._notify(client_id, "refusal")
            return None
        if kind is not None:
            self._notify(client_id, kind)
        return kind

    def _file(self, agent: _Agent, suffix: str, body: object, now: float) -> str | None:
        if suffix == "mc_v3/ts":
            for point in parse_timeseries(body, now):
                agent.points.append(point)
                current = agent.latest.get(point.data_point_id)
                if current is None or point.observed_at >= current.observed_at:
                    agent.latest[point.data_point_id] = point
            return "ts"
        if suffix == "mc_v3/e":
            agent.events.extend(parse_events(body, now))
            return "event"
        if suffix == "cmd_v3/u":
            agent.answers.append(parse_answer(body, now))
            return "answer"
        return None  # other MindConnect topics (files, asset model, ...) are not faked

    def _agent(self, client_id: str) -> _Agent | None:
        agent = self._agents.get(client_id)
        if agent is None:
            if len(self._agents) >= _MAX_AGENTS:
                log.warning("mindconnect_too_many_agents", limit=_MAX_AGENTS)
                return None
            agent = self._agents[client_id] = _Agent()
        return agent

    def _notify(self, client_id: str, kind: str) -> None:
        for listener in list(self.listeners):
            listener(client_id, kind)
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait (bounded) until ``predicate()`` holds after a change; TimeoutError otherwise."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)


# --- the tenant: CA, app credentials, tokens, agent certificates -------------------------------


class MindConnectTenant:
    """A tenant's CA, its app credential and the tokens and certificates it hands out.

    Blocking (files, key generation): call from a thread when on the event loop.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        tenant: str = DEFAULT_TENANT,
        answer_shape: AnswerShape = "documentation",
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Letters and digits only: the app id joins tenant, app name and version with '-', and
        # the client id joins tenant and agent name with '_'.
        if not re.fullmatch(r"[a-z0-9]{1,32}", tenant):
            raise MindConnectError(f"invalid tenant name {tenant!r} (lower-case letters, digits)")
        if answer_shape not in ANSWER_SHAPES:
            raise MindConnectError(f"answer_shape must be one of {ANSWER_SHAPES}")
        self.name = tenant
        self.answer_shape: AnswerShape = answer_shape
        self._dir = state_dir
        self._clock = clock
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.ca = DevCA.load_or_create(state_dir / "ca", common_name=tenant)
        app = read_json_object(state_dir / "app.json")
        if not {"appName", "appVersion", "appSecret"} <= app.keys():
            app = {"appName": "devapp", "appVersion": "1.0.0", "appSecret": secrets.token_hex(16)}
            write_atomic(state_dir / "app.json", json.dumps(app, indent=2).encode(), 0o600)
        self.app_name = str(app["appName"])
        self.app_version = str(app["appVersion"])
        self._app_secret = str(app["appSecret"])
        self._issued: dict[str, str] = {}  # agent name -> client id, this run
        self._lock = threading.Lock()  # certificates are issued from worker threads
        code_file = state_dir / "registration-code"
        if not code_file.exists():
            write_atomic(code_file, secrets.token_hex(16).encode(), 0o600)
        self.registration_code = code_file.read_text().strip()
        own = state_dir / "own-cas"
        self._own_cas = sorted(own.glob("*.pem")) if own.is_dir() else []

    # --- app credentials ------------------------------------------------------------------------

    @property
    def app_id(self) -> str:
        """``<tenant>-<appName>-<appVersion>``: the form mindconnect-mqtt's IHCustomAppUI.py splits
        into hostTenant, appName and appVersion."""
        return f"{self.name}-{self.app_name}-{self.app_version}"

    @property
    def app_secret(self) -> str:
        return self._app_secret

    @property
    def app_file(self) -> Path:
        """``app.json`` (0600): ``{"appName", "appVersion", "appSecret"}``."""
        return self._dir / "app.json"

    def auth_key(self, scheme: str = "Bearer") -> str:
        """The X-SPACE-AUTH-KEY header value for this app's credentials."""
        raw = base64.b64encode(f"{self.app_id}:{self._app_secret}".encode()).decode()
        return f"{scheme} {raw}"

    def token_request(self) -> dict[str, str]:
        """The body of a right token request (IHCustomAppUI.py's get_bearer_token)."""
        return {
            "grant_type": "client_credentials",
            "appName": self.app_name,
            "appVersion": self.app_version,
            "hostTenant": self.name,
            "userTenant": self.name,
        }

    def issued(self) -> dict[str, str]:
        """Agent name -> client id of the certificates issued in this run (a copy)."""
        with self._lock:
            return dict(self._issued)

    def client_id(self, common_name: str) -> str:
        """``<tenant>_<CN>`` (mindconnect-mqtt README: CLIENT_ID is tenantId_AgentName)."""
        return f"{self.name}_{common_name}"

    # --- the token endpoint ---------------------------------------------------------------------

    def issue_token(self, auth_key: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a token request or raise MindConnectAuthError / MindConnectRequestError."""
        self.check_app_credentials(auth_key)
        # grant_type: sent by Siemens' sample (IHCustomAppUI.py), absent from the documented
        # request example (Token Management Service - Samples): optional, but only this value.
        grant = body.get("grant_type", "client_credentials")
        if grant != "client_credentials":
            raise MindConnectRequestError("grant_type must be client_credentials")
        expected = {
            "appName": self.app_name,
            "appVersion": self.app_version,
            "hostTenant": self.name,
            "userTenant": self.name,
        }
        for key, value in expected.items():
            if not isinstance(body.get(key), str):
                raise MindConnectRequestError(f"{key} must be a string")
            if body[key] != value:
                # The credentials are right but name another app or tenant: not authorised.
                raise MindConnectAuthError(f"{key} does not match the app credentials")
        now = self._clock()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + TOKEN_LIFETIME_S
        log.info("mindconnect_token_issued", tenant=self.name, app=self.app_name)
        # access_token: Token Management Service - Samples (developer.mindsphere.io); token_type
        # and expires_in: the OAuth 2.0 access token response (RFC 6749 section 5.1) of the
        # client-credentials grant this endpoint implements.
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(TOKEN_LIFETIME_S)}

    def check_app_credentials(self, auth_key: str | None) -> None:
        """Raise MindConnectAuthError unless ``auth_key`` (X-SPACE-AUTH-KEY) is the app's."""
        # "Basic base64(id:secret)": Siemens' Token Management documentation and mindconnect-nodejs
        # (TokenManagerAuth); "Bearer base64(id:secret)": mindconnect-mqtt's IHCustomAppUI.py.
        scheme, _, encoded = (auth_key or "").strip().partition(" ")
        if scheme not in ("Basic", "Bearer") or not encoded:
            raise MindConnectAuthError("X-SPACE-AUTH-KEY must be 'Bearer|Basic base64(id:secret)'")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise MindConnectAuthError("X-SPACE-AUTH-KEY is not base64") from exc
        app_id, _, secret = decoded.partition(":")
        right = secrets.compare_digest(app_id.encode(), self.app_id.encode())
        right &= secrets.compare_digest(secret.encode(), self._app_secret.encode())
        if not right:
            raise MindConnectAuthError("wrong app credentials")

    def check_token(self, authorization: str | None) -> None:
        """Raise MindConnectAuthError unless ``Authorization`` is ``Bearer <live token>``."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= self._clock():
            raise MindConnectAuthError("missing, unknown or expired access token")

    # --- agentCertificates ----------------------------------------------------------------------

    def issue_agent_certificate(
        self, name: object, *, owner: object = None, token: str | None = None
    ) -> dict[str, Any]:
        """A new key and certificate (CN ``name``) from the tenant CA, in ``answer_shape``.

        With ``token`` the bearer token is checked first (the HTTP route passes its header).
        """
        if token is not None:
            self.check_token(f"Bearer {token}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise MindConnectRequestError(
                "name must be 1-64 letters, digits, '.' or '-', starting with a letter or digit"
            )
        if owner is not None and not isinstance(owner, str):
            raise MindConnectRequestError("owner must be a string")
        if name.startswith("devcloud"):
            # The broker's service, admin and server identities: an agent must not become one.
            raise MindConnectRequestError(f"name {name!r} is reserved by the dev cloud")
        cert_pem, key_pem = self._issue_pair(name)
        client_id = self.client_id(name)
        with self._lock:
            self._issued[name] = client_id
        log.info("mindconnect_agent_certificate_issued", tenant=self.name, client_id=client_id)
        if self.answer_shape == "sample":
            # mindconnect-mqtt IHCustomAppUI.py (submit_generate_agent_certificate) reads exactly
            # these: clientId, credentials.certificatePem, credentials.privateKey.
            return {
                "clientId": client_id,
                "credentials": {"certificatePem": cert_pem, "privateKey": key_pem},
            }
        # Siemens' documentation, "Obtaining Auto-Generated Agent Certificate" (sample response
        # body): publicKey holds the certificate PEM, agentName equals clientId there.
        answer: dict[str, Any] = {
            "id": _ulid_like(),
            "name": name,
            "agentName": client_id,
        }
        if owner is not None:
            answer["owner"] = owner
        answer |= {
            "agentId": uuid.uuid4().hex,
            "clientId": client_id,
            "privateKey": key_pem,
            "publicKey": cert_pem,
            "status": "READY",
        }
        return answer

    def _issue_pair(self, name: str) -> tuple[str, str]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        # RSA in PKCS#1 PEM ("BEGIN RSA PRIVATE KEY"), the documented sample's key format.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256())
        )
        cert = self.ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), name)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return cert.decode(), key_pem.decode()

    # --- the environment's own CA certificates -------------------------------------------------

    @property
    def own_ca_dir(self) -> Path:
        return self._dir / "own-cas"

    def own_cas(self) -> list[Path]:
        """The own CA certificates registered so far."""
        return list(self._own_cas)

    def register_own_ca(self, ca_pem: bytes, verification_pem: bytes) -> Path:
        """Check and keep an environment's own CA (blocking); return where it is kept.

        As Siemens' "Managing CA Certificates using MindConnect MQTT API" describes: at most two
        CA certificates per environment, no intermediates (the CA must be self-signed), and a
        verification certificate whose CN is the registration code, signed by the CA's key.
        """
        from cryptography import x509

        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
            verification = x509.load_pem_x509_certificate(verification_pem)
        except ValueError as exc:
            raise MindConnectRequestError("not a PEM certificate") from exc
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise MindConnectRequestError("not a CA certificate (BasicConstraints CA:true)")
        if ca.issuer != ca.subject or not _signed_by(ca, ca):
            raise MindConnectRequestError("intermediate CA certificates are not supported")
        names = verification.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        if not names or names[0].value != self.registration_code:
            raise MindConnectRequestError("the verification certificate's CN is not the code")
        if verification.issuer != ca.subject or not _signed_by(verification, ca):
            raise MindConnectRequestError("the verification certificate is not signed by the CA")
        from cryptography.hazmat.primitives import hashes

        name = ca.fingerprint(hashes.SHA256()).hex()[:16] + ".pem"
        existing = self.own_cas()
        if self.own_ca_dir / name not in existing and len(existing) >= _MAX_OWN_CAS:
            raise MindConnectRequestError(f"at most {_MAX_OWN_CAS} CA certificates per tenant")
        self.own_ca_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.own_ca_dir / name, ca_pem, 0o644)
        if self.own_ca_dir / name not in self._own_cas:
            self._own_cas.append(self.own_ca_dir / name)
        log.info("mindconnect_own_ca_registered", tenant=self.name, ca=name)
        return self.own_ca_dir / name


def _signed_by(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ulid_like() -> str:
    """26 characters of Crockford base32, the form of the documented answer's ``id``."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(26))


def write_agent_credentials(
    answer: Mapping[str, Any], directory: Path, *, broker_ca: Path
) -> Credentials:
    """Write an agentCertificates answer (either shape) as ``cert.pem`` (0644), ``privkey.pem``
    (0600, from creation on) and ``ca.pem`` (a copy of ``broker_ca``) (blocking; for tests)."""
    credentials = answer.get("credentials")
    if isinstance(credentials, Mapping):
        cert, key = credentials.get("certificatePem"), credentials.get("privateKey")
    else:
        cert, key = answer.get("publicKey"), answer.get("privateKey")
    if not isinstance(cert, str) or not isinstance(key, str):
        raise MindConnectError("the answer holds no certificate and private key")
    directory.mkdir(parents=True, exist_ok=True)
    creds = Credentials(
        ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "privkey.pem"
    )
    write_atomic(creds.key, key.encode(), 0o600)
    write_atomic(creds.cert, cert.encode(), 0o644)
    write_atomic(creds.ca, broker_ca.read_bytes(), 0o644)
    return creds


# --- the side: store fed from the broker, commands ---------------------------------------------


class MindConnectSide:
    """The tenant on a running broker: keeps the store and sends commands (as an admin)."""

    def __init__(
        self,
        tenant: MindConnectTenant,
        broker: MosquittoBroker,
        *,
        credentials: Credentials | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant = tenant
        self.broker = broker
        self.store = MindConnectStore(tenant.name, clock=clock)
        self._credentials = credentials or broker.credentials(broker.admin_identities[0])
        self._clock = clock
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    @property
    def broker_ca(self) -> Path:
        """What agents trust for the broker (the dev cloud's ``MindSphereRootCA1.pem``)."""
        return self.broker.credentials(self.broker.admin_identities[0]).ca

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Follow the tenant's ``o/`` topics until cancelled, reconnecting when needed."""
        tls = await asyncio.to_thread(client_ssl_context, self._credentials)
        identity = await asyncio.to_thread(certificate_common_name, self._credentials.cert)
        backoff = reconnect_backoff()
        topic_filter = f"tc/{self.tenant.name}/+/o/#"
        while True:
            client_id = f"{identity}-mindconnect-{uuid.uuid4().hex[:8]}"
            try:
                broker = self.broker
                async with _new_client(broker.host, broker.port, client_id, tls) as client:
                    await client.subscribe(topic_filter, 1)
                    self._client = client
                    self.connected.set()
                    backoff.reset()
                    log.info("mindconnect_side_connected", tenant=self.tenant.name)
                    if ready is not None:
                        ready.set()
                    async for message in client.messages:
                        self._receive(message.topic.value, _payload_bytes(message.payload))
            except aiomqtt.MqttError as exc:
                delay = backoff.next_delay()
                log.warning("mindconnect_side_disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
            finally:
                self._client = None
                self.connected.clear()

    def _receive(self, topic: str, payload: bytes) -> None:
        try:
            self.store.receive(topic, payload)
        except Exception as exc:  # an agent's message must never stop the side
            log.error("mindconnect_message_dropped", topic=topic, error=type(exc).__name__)

    async def send_command(
        self,
        client_id: str,
        payload: Mapping[str, Any],
        *,
        job_id: str | None = None,
        command_id: str | None = None,
    ) -> SentCommand:
        """Publish ``{"id", "data": {"jobId", "payload"}}`` on the agent's ``i/cmd_v3/c``."""
        client = self._client
        if client is None:
            raise MindConnectError("the MindConnect side is not connected to the broker")
        if (
            not client_id
            or any(c in client_id for c in "/+#")
            or not client_id.startswith(f"{self.tenant.name}_")
        ):
            raise MindConnectRequestError(f"not a client id of tenant {self.tenant.name!r}")
        command = SentCommand(
            id=command_id or str(uuid.uuid4()),
            job_id=job_id or str(uuid.uuid4()),
            client_id=client_id,
            payload=dict(payload),
            sent_at=self._clock(),
        )
        message = {"id": command.id, "data": {"jobId": command.job_id, "payload": dict(payload)}}
        try:
            body = json.dumps(message, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise MindConnectRequestError("the command payload is not JSON") from exc
        topic = agent_topic(self.tenant.name, client_id, "i/cmd_v3/c")
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                await client.publish(topic, body, 1)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise MindConnectError(f"cannot publish the command: {exc}") from exc
        self.store.record_command(command)
        log.info("mindconnect_command_sent", client_id=client_id, command_id=command.id)
        return command

    async def wait_for_answer(self, command_id: str, timeout_s: float = 10.0) -> CommandAnswer:
        """The agent's answer to a command (its ``requestId``); TimeoutError if none came."""
        await self.store.wait_until(lambda: self.store.answer_to(command_id) is not None, timeout_s)
        answer = self.store.answer_to(command_id)
        assert answer is not None
        return answer

    async def wait_for_points(
        self,
        client_id: str,
        count: int,
        timeout_s: float = 10.0,
        data_point_id: str | None = None,
    ) -> list[TimeSeriesPoint]:
        """Wait until at least ``count`` points (of one data point) were kept; return them all."""
        await self.store.wait_until(
            lambda: len(self.store.points(client_id, data_point_id)) >= count, timeout_s
        )
        return self.store.points(client_id, data_point_id)

    async def wait_for_events(
        self, client_id: str, count: int, timeout_s: float = 10.0
    ) -> list[AgentEvent]:
        """Wait until at least ``count`` events were kept; return them all."""
        await self.store.wait_until(lambda: len(self.store.events(client_id)) >= count, timeout_s)
        return self.store.events(client_id)

    def connections(self) -> list[AgentConnection]:
        """Every CONNECT mosquitto logged with a client id of this tenant (blocking)."""
        try:
            text = self.broker.log_path.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            match = _CONNECTED.match(line)
            if match is None or not match["client"].startswith(f"{self.tenant.name}_"):
                continue
            found.append(
                AgentConnection(
                    client_id=match["client"],
                    username=match["user"],
                    clean_session=match["clean"] == "1",
                    keepalive=int(match["keepalive"]),
                    logged_at=match["at"],
                    tenant=self.tenant.name,
                )
            )
        return found

    async def register_own_ca(self, ca_pem: bytes, verification_pem: bytes) -> Path:
        """Register an environment's own CA (see `MindConnectTenant.register_own_ca`) and
        restart the broker so it trusts it: every client reconnects (this side before this
        returns)."""
        path = await asyncio.to_thread(self.tenant.register_own_ca, ca_pem, verification_pem)
        self.broker.add_mindconnect_tenant(self.tenant.name, path)
        # Only a new connection sets it again: wait for it, or what agents send next is lost.
        self.connected.clear()
        await asyncio.to_thread(self.broker.restart)
        async with asyncio.timeout(_REQUEST_TIMEOUT):
            await self.connected.wait()
        return path

    def summary(self) -> dict[str, Any]:
        """The tenant as the dashboard's HTTP API shows it (no secrets)."""
        return {
            "tenant": self.tenant.name,
            "appId": self.tenant.app_id,
            "answerShape": self.tenant.answer_shape,
            "broker": {"host": self.broker.host, "port": self.broker.port},
            "tenantCa": str(self.tenant.ca.cert_path),
            "registrationCode": self.tenant.registration_code,
            "ownCas": [str(path) for path in self.tenant.own_cas()],
            "brokerCa": str(self.broker_ca),
            "agents": [self.store.view(client_id) for client_id in self.store.agents()],
        }


# --- HTTPS routes ---------------------------------------------------------------------------------

_SIDE_KEY: Final = web.AppKey("mindconnect_side", MindConnectSide)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise MindConnectRequestError("body too large")
    try:
        body = await request.json()
    except ValueError as exc:
        raise MindConnectRequestError("body must be JSON") from exc
    if not isinstance(body, dict):
        raise MindConnectRequestError("body must be a JSON object")
    return body


async def _token(request: web.Request) -> web.Response:
    tenant = request.app[_SIDE_KEY].tenant
    auth_key = request.headers.get("X-SPACE-AUTH-KEY")
    try:
        tenant.check_app_credentials(auth_key)  # 401 before anything about the body
        body = await _json_body(request)
        answer = tenant.issue_token(auth_key, body)
    except MindConnectAuthError as exc:
        log.warning("mindconnect_token_refused", reason=str(exc))
        return _error(401, str(exc))
    except MindConnectRequestError as exc:
        return _error(400, str(exc))
    return web.json_response(answer)


async def _agent_certificates(request: web.Request) -> web.Response:
    tenant = request.app[_SIDE_KEY].tenant
    try:
        tenant.check_token(request.headers.get("Authorization"))
        body = await _json_body(request)
        answer = await asyncio.to_thread(
            tenant.issue_agent_certificate, body.get("name"), owner=body.get("owner")
        )
    except MindConnectAuthError as exc:
        log.warning("mindconnect_agent_certificate_refused", reason=str(exc))
        return _error(401, str(exc))
    except MindConnectRequestError as exc:
        return _error(400, str(exc))
    return web.json_response(answer, status=201)


def add_mindconnect_routes(app: web.Application, side: MindConnectSide) -> None:
    """The token and agentCertificates endpoints, on an app served over HTTPS."""
    app[_SIDE_KEY] = side
    app.router.add_post("/api/technicaltokenmanager/v3/oauth/token", _token)
    app.router.add_post("/api/mindconnectmqtt/v3/agentCertificates", _agent_certificates)
