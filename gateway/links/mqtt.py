"""MQTT 3.1.1 over mutual TLS with aiomqtt: the only module that imports it.

The TLS context (``gateway.core.tls``) is built off the event loop (loading keys blocks; every file
is size-checked first), ``TCP_NODELAY`` is set so a quiet link does not wait on Nagle/delayed
ACK, and every aiomqtt/paho error leaves this module as a ``GatewayError`` that says whether
the broker refused our certificate, the two sides share no TLS version or cipher (logged here as
``mqtt_tls_protocol_failed`` with OpenSSL's reason), or the network failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt_client
import structlog

from gateway.core.ports import InboundMessage
from gateway.core.tls import client_context
from gateway.errors import (
    CertificateRejectedError,
    GatewayError,
    MqttAuthError,
    MqttConnectionError,
    TlsProtocolError,
)

log = structlog.get_logger()

AWS_ALPN_PORT = 443
AWS_ALPN_PROTOCOL = "x-amzn-mqtt-ca"  # AWS IoT's ALPN name for MQTT on port 443


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    ca: Path | None  # None: the system's trust store
    cert: Path | None  # None with a user name and password (brokers that log in with those)
    key: Path | None
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0
    will: Will | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None  # read by prepare() (one line), instead of password
    tls: bool = True  # False only for plain MQTT to a loopback host (tests), asked for explicitly
    clean_session: bool = True  # False: the broker keeps subscriptions and QoS 1 messages
    chain: Path | None = None  # issuing CA(s) presented after ``cert`` (an own CA)


# OpenSSL reasons (uppercase, as in ``ssl.SSLError.reason``) that mean the two sides could not
# agree on a protocol version, cipher or extension: nothing to do with either certificate.
_PROTOCOL_REASONS = (
    "UNSUPPORTED_PROTOCOL",
    "WRONG_VERSION_NUMBER",
    "ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
    "VERSION_TOO_LOW",
    "VERSION_TOO_HIGH",
    "WRONG_SSL_VERSION",
    "UNKNOWN_PROTOCOL",
    "NO_SHARED_CIPHER",
    "NO_CIPHERS_AVAILABLE",
    "NO_CIPHER_MATCH",
    "INAPPROPRIATE_FALLBACK",
    "NO_APPLICATION_PROTOCOL",
    "ALERT_HANDSHAKE_FAILURE",
    "NO_SUITABLE_SIGNATURE_ALGORITHM",
)
# Reasons about a certificate (ours refused, theirs not trusted) or its key.
_CERTIFICATE_WORDS = ("CERTIFICATE", "UNKNOWN_CA", "BAD_CERT", "ACCESS_DENIED", "DECRYPT_ERROR")


def tls_failure(reason: str) -> str | None:
    """``"certificate"``, ``"protocol"`` or None (not a TLS handshake problem) for an OpenSSL
    reason or a message quoting one (``[SSL: TLSV1_ALERT_PROTOCOL_VERSION] ...``)."""
    text = reason.upper()
    if any(word in text for word in _CERTIFICATE_WORDS):
        return "certificate"
    if any(word in text for word in _PROTOCOL_REASONS):
        return "protocol"
    if "HANDSHAKE" in text or "ALERT" in text:
        return "certificate"  # another alert while shaking hands: most likely a refusal
    return None


def _tls_problem(exc: BaseException) -> tuple[str, str] | None:
    """(kind, reason) of the first TLS certificate or protocol failure in a failure chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return "certificate", current.reason or "CERTIFICATE_VERIFY_FAILED"
        if isinstance(current, ssl.SSLError) and current.reason:
            kind = tls_failure(current.reason)
            if kind is not None:
                return kind, current.reason
        current = current.__cause__ or current.__context__
    return None


class _TlsAlertRecorder(logging.Handler):
    """Keeps the TLS alert paho logs while connecting.

    With TLS 1.3 the broker checks our certificate after the client's side of the handshake
    is done; its refusal arrives as an alert that paho only logs ("failed to receive on
    socket: [SSL: TLSV1_ALERT_UNKNOWN_CA] ...") while aiomqtt reports a timeout.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.alert: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "SSL" in message and "ALERT" in message.upper():
            self.alert = message


# CONNACK refusals that mean the credentials are wrong (MQTT 3.1.1 return codes 4 and 5, and
# their MQTT 5 reason codes 134 and 135 as paho 2 reports them).
_AUTH_CODES = (4, 5, 134, 135)


def _auth_refused(exc: BaseException) -> bool:
    if not isinstance(exc, aiomqtt.MqttCodeError):
        return False
    rc = exc.rc
    value = getattr(rc, "value", rc)
    return isinstance(value, int) and value in _AUTH_CODES


def _convert(exc: BaseException, action: str) -> MqttConnectionError:
    if _auth_refused(exc):
        return MqttAuthError(f"{action}: the broker refused the user name or password ({exc})")
    problem = _tls_problem(exc)
    if problem is None:
        return MqttConnectionError(f"{action}: {exc}")
    kind, reason = problem
    if kind == "certificate":
        return CertificateRejectedError(f"{action}: TLS certificate rejected ({exc})")
    return TlsProtocolError(
        f"{action}: TLS handshake failed on the protocol, not a certificate ({reason}): "
        "the broker and this gateway share no TLS version (1.2 or later) or cipher",
        reason,
    )


def _cancels() -> int:
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _raise_swallowed_cancel(before: int) -> None:
    """Re-raise a cancellation that aiomqtt's ``asyncio.wait_for`` swallowed.

    On Python 3.11 ``wait_for`` returns the result when the awaited acknowledgement arrives
    just as its task is cancelled, dropping the cancellation: a shadow sender cancelled at
    shutdown then went back to waiting on its queue, and the gateway ignored SIGTERM."""
    if _cancels() > before:
        raise asyncio.CancelledError


class AiomqttSession:
    """An open aiomqtt client behind the ``MqttSession`` port."""

    def __init__(self, client: _KeepaliveClient) -> None:
        self._client = client

    async def subscribe(self, topics: Sequence[str]) -> None:
        before = _cancels()
        try:
            await self._client.subscribe([(topic, 1) for topic in topics])
        except aiomqtt.MqttError as exc:
            raise _convert(exc, "subscribe failed") from exc
        _raise_swallowed_cancel(before)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        before = _cancels()
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise _convert(exc, "publish failed") from exc
        _raise_swallowed_cancel(before)

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 now (written before this returns, when the socket takes it),
        without waiting for the PUBACK. paho refuses it only without a connection, which
        ends the session anyway."""
        self._client.publish_nowait(topic, payload)

    async def messages(self) -> AsyncIterator[InboundMessage]:
        try:
            async for message in self._client.inbound():
                yield InboundMessage(message.topic, bytes(message.payload))
        except aiomqtt.MqttError as exc:
            raise _convert(exc, "connection lost") from exc


def _read_password(path: Path) -> str:
    """The first line of ``path`` (size-checked; blocking)."""
    from gateway.core.credfiles import read_credential_file

    text = read_credential_file(path, "mqtt.password_file").decode("utf-8", "replace")
    return text.splitlines()[0] if text else ""


class _KeepaliveClient(aiomqtt.Client):
    """aiomqtt's client with a quieter keepalive and a shorter path for each packet.

    - Keepalive: aiomqtt runs paho's ``loop_misc`` (send PINGREQ once the link was quiet for
      ``keepalive``; drop the link when the PINGRESP is a keepalive late) once a second, so an
      idle gateway woke every second for it. A quarter of the keepalive sends the ping at most
      1.25 keepalives after the last packet, inside the 1.5 keepalives a broker allows (MQTT
      3.1.1 §3.1.2.10).
    - Inbound: aiomqtt's message iterator makes a task and an ``asyncio.wait`` per message (three
      loop turns before a delta is read); here paho's ``on_message`` appends to a deque and
      wakes the one reader directly (``inbound``).
    - Outbound: aiomqtt registers the socket writer with ``call_soon_threadsafe`` (a self-pipe
      write, then a turn to add the writer, then one for the socket to report writable); on
      the loop's own thread the queued packets are written on the next turn instead, and the
      writer is registered only if the socket could not take them all.

    The three overrides replace private aiomqtt 2.x methods (aiomqtt is pinned ``<3``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox: deque[mqtt_client.MQTTMessage] = deque()
        self._reader: asyncio.Future[None] | None = None
        self._loop_thread = threading.get_ident()  # aiomqtt binds the client to this loop

    async def _misc_loop(self) -> None:  # overrides aiomqtt's (private, aiomqtt 2.x)
        interval = max(1.0, self._client.keepalive / 4)
        while self._client.loop_misc() == mqtt_client.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(interval)

    # -- inbound ----------------------------------------------------------------------------

    def _on_message(  # overrides aiomqtt's (private, aiomqtt 2.x); paho calls it on the loop
        self, client: mqtt_client.Client, userdata: Any, message: mqtt_client.MQTTMessage
    ) -> None:
        self._inbox.append(message)
        self._wake_reader()

    def _wake_reader(self, _: object = None) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def inbound(self) -> AsyncIterator[mqtt_client.MQTTMessage]:
        """Messages in arrival order; ``MqttError`` once the connection is gone (messages that
        arrived before it are yielded first)."""
        inbox = self._inbox
        disconnected = self._disconnected  # replaced only by __aenter__, before a session
        disconnected.add_done_callback(self._wake_reader)
        try:
            while True:
                while inbox:
                    yield inbox.popleft()
                if disconnected.done():
                    raise aiomqtt.MqttError(
                        "Disconnected during message iteration"
                    ) from disconnected.exception()
                self._reader = self._loop.create_future()
                await self._reader
        finally:
            self._reader = None
            disconnected.remove_done_callback(self._wake_reader)

    # -- outbound ---------------------------------------------------------------------------

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        """paho's publish, written to the socket right away (with whatever was queued before
        it), its PUBACK not awaited (aiomqtt's ``_on_publish`` ignores a message id nobody
        waits for). Called from a task on the loop, never from inside paho."""
        sock = self._client.socket()
        self._client.publish(topic, payload, qos=1)
        if sock is not None:
            self._write_queued(self._client, None, sock)

    def _on_socket_register_write(  # overrides aiomqtt's (private, aiomqtt 2.x)
        self, client: mqtt_client.Client, userdata: Any, sock: Any
    ) -> None:
        if threading.get_ident() != self._loop_thread:  # connect() runs in an executor thread
            super()._on_socket_register_write(client, userdata, sock)
            return
        self._loop.call_soon(self._write_queued, client, userdata, sock)

    def _write_queued(self, client: mqtt_client.Client, userdata: Any, sock: Any) -> None:
        try:
            client.loop_write()
        except Exception as exc:  # like aiomqtt's writer: a broken pipe ends the connection
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        if client.want_write() and client.socket() is sock:
            # The socket took only part: paho still counts the writer as registered, so it
            # will not ask again; finish when the socket is writable.
            super()._on_socket_register_write(client, userdata, sock)


class AiomqttConnector:
    """Opens sessions to one broker with one identity; the TLS context is built once."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self._tls: ssl.SSLContext | None = None
        self._password = settings.password

    async def prepare(self) -> None:
        await self.tls_context()
        if self.settings.password_file is not None and self._password is None:
            self._password = await asyncio.to_thread(_read_password, self.settings.password_file)

    async def tls_context(self) -> ssl.SSLContext | None:
        if not self.settings.tls:
            return None
        if self._tls is None:
            s = self.settings
            alpn = [AWS_ALPN_PROTOCOL] if s.port == AWS_ALPN_PORT else []
            self._tls = await asyncio.to_thread(
                client_context, s.ca, s.cert, s.key, alpn=alpn, chain=s.chain
            )
        return self._tls

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AiomqttSession]:
        s = self.settings
        tls = await self.tls_context()
        if s.password_file is not None and self._password is None:  # a connector built on reload
            try:
                self._password = await asyncio.to_thread(_read_password, s.password_file)
            except GatewayError as exc:
                raise MqttConnectionError(str(exc)) from exc
        will = None
        if s.will is not None:
            will = aiomqtt.Will(s.will.topic, s.will.payload, qos=1, retain=s.will.retain)
        paho_logger = logging.getLogger(f"mqtt.{s.client_id}")  # propagates to "mqtt"
        alerts = _TlsAlertRecorder()
        paho_logger.addHandler(alerts)
        client = _KeepaliveClient(
            logger=paho_logger,
            hostname=s.host,
            port=s.port,
            identifier=s.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            tls_context=tls,
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,
            clean_session=s.clean_session,
            will=will,
            username=s.username,
            password=self._password,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        before = _cancels()
        try:
            await client.__aenter__()
        except (aiomqtt.MqttError, OSError) as exc:
            error = _convert(exc, f"cannot connect to {s.host}:{s.port}")
            if alerts.alert is not None and not isinstance(error, TlsProtocolError | MqttAuthError):
                if tls_failure(alerts.alert) == "protocol":
                    error = TlsProtocolError(
                        f"cannot connect to {s.host}:{s.port}: TLS handshake failed on the "
                        f"protocol, not a certificate ({alerts.alert})",
                        alerts.alert,
                    )
                else:
                    error = CertificateRejectedError(
                        f"cannot connect to {s.host}:{s.port}: the broker refused our TLS "
                        f"certificate ({alerts.alert})"
                    )
            if isinstance(error, TlsProtocolError):
                log.error("mqtt_tls_protocol_failed", host=s.host, port=s.port, reason=error.reason)
            raise error from exc
        finally:
            paho_logger.removeHandler(alerts)
        if _cancels() > before:  # cancelled as the CONNACK arrived (see _raise_swallowed_cancel)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise asyncio.CancelledError
        log.info("mqtt_connected", host=s.host, port=s.port, client_id=s.client_id)
        try:
            yield AiomqttSession(client)
        finally:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as exc:
                log.debug("mqtt_disconnect_unclean", error=str(exc))
            log.info("mqtt_disconnected", host=s.host, port=s.port)
