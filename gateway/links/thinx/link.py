"""The THiNX link: registration and check-in over HTTPS, status and configuration over MQTT.

Two halves share one registration:

- ``run_checkins`` (the ``thinx_checkin`` task): ``POST {url}/device/register`` at start and
  every ``checkin_interval_s`` ±10 %; the answer's udid is stored (``state.py``) and opens the
  MQTT half; a ``FIRMWARE_UPDATE`` goes to the firmware handler (the gateway's update path),
  then the gateway checks in again with the new version. Failures back off (an API key or owner
  the server refuses: at the cap, logged ``thinx_auth_failed`` with the server's reason); the
  shadow and the pins never wait on it.
- ``run_session`` (the ``CloudLink`` side, on the link's own connection loop, logged in as the
  udid with the API key; the first udid, or a new one, makes the loop connect again at once):
  subscribes to ``/<owner>/<udid>``, publishes the check-in JSON to the
  status topic right after connecting, then the status string whenever it changes (at most once
  a second), and takes configuration pushes (plain or double-encoded JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from gateway.core.backoff import Backoff
from gateway.core.ports import DeviceCore, InboundMessage, MqttSession
from gateway.core.values import JsonValue
from gateway.errors import GatewayError, MqttConnectionError, UpdateError
from gateway.links.thinx.ports import (
    ConnectorFactory,
    FirmwareHandler,
    FirmwareRequest,
    HttpFactory,
    MqttLogin,
    ThinxHttp,
)
from gateway.links.thinx.protocol import (
    LAST_WILL,
    REQUEST_HEADERS,
    ConfigurationPush,
    FirmwareUpdate,
    Identity,
    Refused,
    Registered,
    ThinxProtocolError,
    device_topic,
    is_auth_failure,
    normalized_mac,
    parse_answer,
    parse_message,
    registration_body,
    render_status,
    status_message,
    status_topic,
)
from gateway.links.thinx.state import (
    Registration,
    load_configuration,
    load_registration,
    save_configuration,
    save_registration,
)

log = structlog.get_logger()

JITTER = 0.1
STATUS_MIN_INTERVAL_S = 1.0  # the status is re-published on change at most once a second
MAX_ERROR_CHARS = 300
MAX_COMMAND_OUTPUT = 4096
FINAL_STATUS_TIMEOUT_S = 1.0


class ThinxApiKeyError(GatewayError):
    """The API key file is missing, empty, or readable by others."""


def read_api_key(path: Path) -> str:
    """The API key from ``path`` (blocking): a regular file of mode 0600 (or stricter)."""
    from gateway.core.credfiles import read_credential_file

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ThinxApiKeyError(f"cannot read thinx.api_key_file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ThinxApiKeyError(
            f"thinx.api_key_file {path} is readable by others (mode {mode & 0o777:o}); "
            f"chmod 600 {path}"
        )
    key = read_credential_file(path, "thinx.api_key_file").decode("utf-8", "replace").strip()
    if not key or any(c.isspace() for c in key):
        raise ThinxApiKeyError(f"thinx.api_key_file {path} must hold one API key")
    return key


@dataclass(frozen=True)
class ThinxLinkSettings:
    url: str
    owner: str
    identity: Identity  # mac, firmware, owner, alias, platform (version: running_version())
    checkin_interval_s: float
    retry_min_s: float
    retry_max_s: float
    status_template: str
    retain_status: bool
    on_configuration: tuple[str, ...] | None
    on_configuration_timeout_s: float
    state_dir: Path  # state_dir/thinx


class ThinxLink:
    """One gateway's THiNX device: registration state, check-ins, the MQTT session."""

    def __init__(
        self,
        settings: ThinxLinkSettings,
        *,
        engine: DeviceCore,
        api_key_file: Path,
        http: HttpFactory,
        running_version: Callable[[], str] | None = None,
        firmware: FirmwareHandler | None = None,
        gateway_errors: Callable[[], bool] = lambda: False,
        main_link_up: Callable[[], bool] = lambda: True,
        rng: Callable[[float, float], float] = random.uniform,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._api_key_file = api_key_file
        self._api_key = ""  # read by prepare()
        self.prepared = asyncio.Event()
        self._http = http
        # Set by the plan once the gateway is built (GatewayFacts): the version the gateway
        # reports as running, its firmware path, and what the status marks look at.
        self.running_version = running_version or (lambda: settings.identity.version)
        self.firmware = firmware
        self.gateway_errors = gateway_errors
        self.main_link_up = main_link_up
        # The link's own connection loop's "connect again now" (GatewayFacts): a new udid is a
        # new MQTT login. None outside a gateway: the unregistered session then ends by itself.
        self.reconnect_now: Callable[[], None] | None = None
        self._rng = rng
        self._monotonic = monotonic
        self.connected = False
        self.registration = Registration()  # the stored one is read by prepare()
        self.registered = asyncio.Event()
        self.configuration: dict[str, Any] | None = None
        self.configuration_received_at: str | None = None
        self.checkin_error: str | None = None
        self.checkin_failures = 0
        self.published_status: str | None = None
        self.ota: str | None = None  # "2.0: downloading" while an update runs
        self._changed = asyncio.Event()
        engine.add_listener(self)

    async def prepare(self) -> None:
        """Read the API key, the stored registration and configuration (and find the MAC when
        none is configured) before anything runs; a key file readable by others fails here,
        before any pin is touched."""
        if self.prepared.is_set():
            return
        self._api_key = await asyncio.to_thread(read_api_key, self._api_key_file)
        directory = self.settings.state_dir
        self.registration = await asyncio.to_thread(load_registration, directory)
        if self.registration.udid:
            self.registered.set()
        self.configuration = await asyncio.to_thread(load_configuration, directory)
        identity = self.settings.identity
        if not identity.mac or not identity.platform:
            mac = identity.mac or await asyncio.to_thread(primary_mac)
            platform = identity.platform or await asyncio.to_thread(platform_name)
            self.settings = replace(
                self.settings,
                identity=replace(identity, mac=normalized_mac(mac), platform=platform),
            )
        self.prepared.set()

    # -- what the device core tells us ----------------------------------------------------------

    def on_change(self, name: str, value: JsonValue, observed_at: float) -> None:
        self._changed.set()

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        self._changed.set()

    def on_deferred_dropped(self, name: str, reason: str) -> None:
        """Nothing to do: this link sets no values."""

    def on_failsafe(self, name: str) -> None:
        self._changed.set()

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """OTA progress shows in the THiNX status (``(update 2.0: downloading)``)."""
        if key == "ota" and isinstance(value, dict):
            state, version = value.get("state"), value.get("version")
            active = state in ("downloading", "verifying", "applying")
            self.ota = f"{version}: {state}" if active and version else None
            self._changed.set()

    # -- the status string ---------------------------------------------------------------------

    def status_text(self) -> str:
        return render_status(
            self.settings.status_template,
            self.engine.values,
            errors=self.gateway_errors(),
            main_link_down=not self.main_link_up(),
            ota=self.ota,
        )

    # -- check-ins -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {**REQUEST_HEADERS, "Authentication": self._api_key}

    def checkin_body(self) -> dict[str, Any]:
        identity = replace(self.settings.identity, version=self.running_version())
        return registration_body(identity, udid=self.registration.udid, status=self.status_text())

    async def run_checkins(self) -> None:
        """Check in at start and every interval (±10 %); failures back off. Until cancelled."""
        settings = self.settings
        backoff = Backoff(settings.retry_min_s, settings.retry_max_s, float("inf"), self._rng)
        await self.prepared.wait()
        async with self._http() as http:
            while True:
                delay: float
                try:
                    again = await self.check_in(http)
                    backoff.attempt = 0
                    self.checkin_error = None
                    delay = 0.0 if again else self._interval()
                except _AuthRefused as exc:
                    self._failed(str(exc))
                    delay = backoff.at_cap()
                    log.error(
                        "thinx_auth_failed",
                        reason=exc.reason,
                        hint="check thinx.owner and thinx.api_key_file",
                        retry_in_s=round(delay, 1),
                    )
                except (UpdateError, ThinxProtocolError, OSError) as exc:
                    self._failed(str(exc))
                    delay = backoff.next_delay()
                    log.warning(
                        "thinx_checkin_failed", error=self.checkin_error, retry_in_s=round(delay, 1)
                    )
                except Exception as exc:  # nothing a server sends may end the task
                    self._failed(f"{type(exc).__name__}: {exc}")
                    delay = backoff.next_delay()
                    log.error(
                        "thinx_checkin_failed_unexpectedly",
                        error_type=type(exc).__name__,
                        error=self.checkin_error,
                        retry_in_s=round(delay, 1),
                    )
                if delay > 0:
                    await asyncio.sleep(delay)

    def _interval(self) -> float:
        return self.settings.checkin_interval_s * self._rng(1.0 - JITTER, 1.0 + JITTER)

    def _failed(self, error: str) -> None:
        self.checkin_error = error[:MAX_ERROR_CHARS]
        self.checkin_failures += 1

    async def check_in(self, http: ThinxHttp) -> bool:
        """One check-in; True when another should follow right away (after an update)."""
        url = f"{self.settings.url}/device/register"
        body = json.dumps(self.checkin_body()).encode()
        reply = await http.request(
            "POST", url, headers=self._headers(), data=body, raise_for_status=False
        )
        if reply.status >= 300:
            raise UpdateError(f"POST /device/register answered HTTP {reply.status}")
        answer = parse_answer(reply.body)
        if isinstance(answer, Refused):
            if is_auth_failure(answer.reason):
                raise _AuthRefused(answer.reason)
            raise UpdateError(f"registration refused: {answer.reason}")
        now = datetime.now(UTC)
        changes: dict[str, Any] = {
            "last_checkin": now.isoformat(timespec="seconds"),
            "last_checkin_at": now.timestamp(),
            "version": self.running_version(),
        }
        if isinstance(answer, Registered):
            changes.update(
                udid=answer.udid,
                owner=answer.owner or self.registration.owner,
                alias=answer.alias or self.registration.alias,
                auto_update=answer.auto_update,
                server_timestamp=answer.timestamp,
            )
        elif answer.udid:
            changes["udid"] = answer.udid
        await self._store(self.registration.with_changes(**changes))
        log.info(
            "thinx_checkin",
            udid=self.registration.udid,
            version=changes["version"],
            status="FIRMWARE_UPDATE" if isinstance(answer, FirmwareUpdate) else "OK",
        )
        if isinstance(answer, FirmwareUpdate):
            return await self._update(http, answer)
        return False

    async def _store(self, registration: Registration) -> None:
        first = not self.registration.udid and registration.udid
        changed_udid = registration.udid != self.registration.udid
        await asyncio.to_thread(save_registration, self.settings.state_dir, registration)
        self.registration = registration
        if first:
            log.info("thinx_registered", udid=registration.udid, owner=self.settings.owner)
        elif changed_udid:
            log.warning("thinx_udid_changed", udid=registration.udid)
        if registration.udid:
            self.registered.set()
            if changed_udid and self.reconnect_now is not None:
                self.reconnect_now()  # log in (again) as the new udid right away

    async def _update(self, http: ThinxHttp, answer: FirmwareUpdate) -> bool:
        log.info("thinx_firmware_offered", version=answer.version, ott=answer.ott is not None)
        if self.firmware is None:
            log.warning("thinx_firmware_not_applied", version=answer.version, reason="no ota:")
            return False
        if answer.version == self.running_version():
            log.info("thinx_firmware_skipped", version=answer.version, reason="up to date")
            return False
        base = f"{self.settings.url}/device/firmware"
        if answer.ott:
            request = FirmwareRequest(answer.version, f"{base}?ott={answer.ott}", "GET")
        else:
            request = FirmwareRequest(
                answer.version,
                base,
                "POST",
                json_body={
                    "mac": self.settings.identity.mac,
                    "owner": self.settings.owner,
                    "udid": self.registration.udid,
                },
                headers=self._headers(),
            )
        applied = await self.firmware(http, request)
        return applied and self.running_version() == answer.version

    # -- the MQTT session ----------------------------------------------------------------------

    def login(self) -> MqttLogin:
        udid = self.registration.udid
        return MqttLogin(
            client_id=self.settings.identity.mac,  # THiNXLib connects with thinx_mac()
            username=udid,
            password=self._api_key,
            will_topic=status_topic(self.settings.owner, udid),
            will_payload=LAST_WILL,
        )

    async def run_session(self, session: MqttSession, stop: asyncio.Event) -> None:
        if isinstance(session, Unregistered):
            # No udid yet (no MQTT login): wait for the first check-in, or for a stop.
            waits: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.registered.wait()),
            }
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
            if stop.is_set():
                return
            if self.reconnect_now is not None:
                # Registered: the loop connects again at once, logged in as the udid (``_store``
                # asked already; asking twice before the loop looks is one reconnect).
                self.reconnect_now()
                return
            raise MqttConnectionError("registered with THiNX: logging in to its broker")
        owner, udid = self.settings.owner, self.registration.udid
        topic = status_topic(owner, udid)
        await session.subscribe([device_topic(owner, udid)])
        # THiNXLib publishes the check-in body right after subscribing (unretained).
        await session.publish(topic, json.dumps(self.checkin_body()).encode(), retain=False)
        self.connected = True
        self.published_status = None
        log.info("thinx_mqtt_connected", udid=udid)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = (
                    group.create_task(self._read(session), name="thinx_reader"),
                    group.create_task(self._publish_status(session, topic), name="thinx_status"),
                )
                await stop.wait()
                for task in tasks:
                    task.cancel()
            # A clean stop says what the Last Will would have said.
            with suppress(TimeoutError):
                async with asyncio.timeout(FINAL_STATUS_TIMEOUT_S):
                    await session.publish(topic, LAST_WILL, retain=self.settings.retain_status)
        finally:
            self.connected = False

    async def _publish_status(self, session: MqttSession, topic: str) -> None:
        last = -STATUS_MIN_INTERVAL_S
        while True:
            text = self.status_text()
            if text != self.published_status:
                wait = last + STATUS_MIN_INTERVAL_S - self._monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await session.publish(
                    topic, status_message(text), retain=self.settings.retain_status
                )
                self.published_status = text
                last = self._monotonic()
                log.debug("thinx_status_published", length=len(text))
            self._changed.clear()
            try:  # device changes wake us; the marks (#e, #w) are looked at every second
                async with asyncio.timeout(STATUS_MIN_INTERVAL_S):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _read(self, session: MqttSession) -> None:
        async for message in session.messages():
            await self.on_message(message)

    async def on_message(self, message: InboundMessage) -> None:
        try:
            parsed = parse_message(message.payload)
        except ThinxProtocolError as exc:
            log.warning("thinx_message_dropped", reason=str(exc), bytes=len(message.payload))
            return
        if isinstance(parsed, ConfigurationPush):
            await self.on_configuration(parsed.values)
        else:
            log.info("thinx_message_ignored", kind=parsed.kind)

    async def on_configuration(self, values: dict[str, Any]) -> None:
        received = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            await asyncio.to_thread(save_configuration, self.settings.state_dir, values, received)
        except OSError as exc:
            log.error("thinx_configuration_not_saved", error=str(exc))
            return
        self.configuration = values
        self.configuration_received_at = received
        log.info("thinx_configuration_received", keys=sorted(values)[:50])
        if self.settings.on_configuration:
            await self._run_on_configuration(values)

    async def _run_on_configuration(self, values: dict[str, Any]) -> None:
        argv = list(self.settings.on_configuration or ())
        data = json.dumps({"configuration": values}).encode()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            log.error("thinx_on_configuration_failed", error=exc.strerror or str(exc))
            return
        try:
            async with asyncio.timeout(self.settings.on_configuration_timeout_s):
                output, _ = await process.communicate(data)
        except TimeoutError:
            process.kill()
            await process.wait()
            log.error(
                "thinx_on_configuration_timed_out",
                timeout_s=self.settings.on_configuration_timeout_s,
            )
            return
        if process.returncode:
            log.error(
                "thinx_on_configuration_failed",
                returncode=process.returncode,
                output=output[-MAX_COMMAND_OUTPUT:].decode("utf-8", "replace"),
            )
        else:
            log.info("thinx_on_configuration_done")

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        registration = self.registration
        return {
            "server": self.settings.url,
            "connected": self.connected,
            "registered": bool(registration.udid),
            "udid": registration.udid or None,
            "owner": self.settings.owner,
            "alias": registration.alias,
            "auto_update": registration.auto_update,
            "last_checkin": registration.last_checkin,
            "last_checkin_at": registration.last_checkin_at,
            "checkin_error": self.checkin_error,
            "checkin_failures": self.checkin_failures,
            "status": self.published_status,
            "configuration_keys": sorted(self.configuration or {}),
            "configuration_received_at": self.configuration_received_at,
        }


class _AuthRefused(UpdateError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"the server refused the API key or owner: {reason}")
        self.reason = reason


class Unregistered:
    """The "session" before the first registration: no connection, nothing to send (the
    link's run_session waits in it for the udid or a stop)."""

    async def subscribe(self, topics: Sequence[str]) -> None:
        raise MqttConnectionError("not registered with THiNX yet")

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        raise MqttConnectionError("not registered with THiNX yet")

    async def messages(self) -> AsyncIterator[InboundMessage]:
        raise MqttConnectionError("not registered with THiNX yet")
        yield  # an async generator that ends at once


class ThinxConnector:
    """The link's MQTT connector: waits for the registration (the udid is the user name),
    then connects through a connector ``make`` builds for that login (rebuilt if it changes)."""

    def __init__(self, link: ThinxLink, make: ConnectorFactory) -> None:
        self._link = link
        self._make = make
        self._login: MqttLogin | None = None
        self._inner: Any = None

    async def prepare(self) -> None:
        """The API key (the broker's password) is read up front; the TLS context per login."""
        await self._link.prepare()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MqttSession]:
        await self._link.prepared.wait()
        if not self._link.registered.is_set():
            yield Unregistered()  # no login before the server assigns a udid
            return
        login = self._link.login()
        if login != self._login or self._inner is None:
            inner = self._make(login)
            await inner.prepare()
            self._inner, self._login = inner, login
        async with self._inner.connect() as session:
            yield session


def platform_name() -> str:
    """``platform`` in the check-in: the Pi's model (device-tree), else the OS (THiNXLib
    sends "<builder>:<mcu>", e.g. "arduino:esp8266"; device.js lower-cases it)."""
    try:
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\x00").decode()
    except (OSError, UnicodeDecodeError):
        model = ""
    machine = os.uname().machine
    if model.startswith("Raspberry Pi"):
        return f"python:raspberry-pi:{machine}"
    return f"python:linux:{machine}"


def primary_mac() -> str:
    """The MAC of the interface with the default route (``/proc/net/route``), else the first
    non-loopback interface with one (blocking)."""
    names: list[str] = []
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                names.append(fields[0])
    except OSError:
        pass
    with suppress(OSError):
        names += sorted(os.listdir("/sys/class/net"))
    for name in names:
        if name == "lo":
            continue
        try:
            mac = Path(f"/sys/class/net/{name}/address").read_text().strip().upper()
        except OSError:
            continue
        if mac and mac != "00:00:00:00:00:00":
            return mac
    return "00:00:00:00:00:00"
