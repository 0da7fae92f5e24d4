"""A local THiNX server for development and tests: the device API over HTTPS and a mosquitto
that logs devices in with user name = udid, password = API key.

The contract is THiNX's own (suculent/thinx-device-api, read not copied):

- ``POST /device/register`` (router.deviceapi.js): the ``Authentication`` header holds the API
  key; ``{"registration": {...}}`` answers ``{"registration": {"success": true, "status": "OK",
  "udid", "owner", "alias", "auto_update", "timestamp", ...}}`` (device.js
  ``update_device_and_respond``; a new device gets a new udid, ``register``), or, when
  ``auto_update`` is on and newer firmware is offered, the same object as a JSON *string* with
  ``"status": "FIRMWARE_UPDATE"``, ``"ott"``, ``"version"``, ``"mac"`` and neither ``success``
  nor ``owner``. Errors are ``{"success": false, "response": "<reason>"}`` with HTTP 200
  (util.js ``responder``: ``authentication_error``, ``apikey_not_found`` for an unknown owner,
  ``owner_found_but_no_key`` for a wrong key, apikey.js), HTTP 400 for a bad request.
- ``GET /device/firmware?ott=<ott>``: the artifact with ``x-MD5`` (device.js ``ott_update`` and
  ``update_binary``), else ``{"success": false, "response": "OTT_UPDATE_NOT_FOUND"}``.
- ``POST /device/firmware`` ``{"mac", "owner", "udid"}`` with the API key: the artifact wrapped
  in JSON as THiNX's server sends it (router.deviceapi.js ``Util.respond`` of device.js
  ``update_binary``'s ``{md5, filesize, payload}``, the payload a Node Buffer serialised as
  ``{"type": "Buffer", "data": [bytes]}``); ``misbehaviour.raw_post_firmware`` answers like the
  OTT route instead (raw, ``x-MD5``); or ``{"success": false, "status": "UPDATE_NOT_FOUND" |
  "OK"}``.
- Configuration push (messenger.js ``push``): ``{"configuration": {...}}`` on ``/<owner>/<udid>``,
  JSON-encoded twice (``publish`` stringifies what ``push`` already stringified); plain on
  request. Device status arrives on ``/<owner>/<udid>/status``.

API keys are stored hashed (SHA-256) per owner in ``keys.json``; the broker's password file
holds mosquitto's PBKDF2-SHA512 hash of the key per udid (written at registration, like
THiNX's ``authorize_mqtt``), its ACL gives each udid only ``/<owner>/<udid>`` (read) and
``/<owner>/<udid>/status`` (read/write). Firmware is offered per owner in ``firmware.json``
(``{"<owner>": {"version": "2.0", "file": "fw.bin"}}``, files in ``firmware/``); an offer turns
``auto_update`` on for that owner's devices, as a user would in THiNX's console.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import pwd
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import structlog
from aiohttp import web

from gateway.core.atomicfile import write_atomic
from gateway.devcloud.broker import free_port, spawn_mosquitto, stop_process
from gateway.devcloud.pki import DevCA, DevCloudError, read_json_object

__all__ = [
    "ThinxBroker",
    "ThinxError",
    "ThinxService",
    "mosquitto_password_hash",
    "thinx_app",
]

KEYS_FILE: Final = "keys.json"
DEVICES_FILE: Final = "devices.json"
FIRMWARE_FILE: Final = "firmware.json"
FIRMWARE_DIR: Final = "firmware"
PUSH_DIR: Final = "push"  # drop {"udid", "configuration"[, "double_encoded"]} files here
OWNER_FILE: Final = "owner"
API_KEY_FILE: Final = "apikey"
SERVICE_USER: Final = "thinx-service"
_MAX_BODY: Final = 64 * 1024
_START_TIMEOUT: Final = 10.0
_OTT_TTL_S: Final = 86_400.0  # device.js storeOTT: expires after a day

log = structlog.get_logger()

# Called with (udid, kind, details) for the dashboard: kind is "checkin" or "status".
ThinxListener = Callable[[str, str, dict[str, Any]], None]


class ThinxError(DevCloudError):
    """The dev THiNX server's state or broker failed."""


def mosquitto_password_hash(password: str, *, salt: bytes | None = None) -> str:
    """A mosquitto 2 password-file hash: ``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>``."""
    iterations = 101  # mosquitto_passwd's default
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _public(device: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in device.items() if k not in ("mqtt_hash", "key_sha256")}


class ThinxBroker:
    """mosquitto on loopback for THiNX devices: TLS (server certificate from the dev CA), no
    client certificates, user name and password from a password file, per-device ACLs."""

    def __init__(self, workdir: Path, ca: DevCA, *, host: str = "127.0.0.1", port: int = 0):
        if any(c.isspace() for c in str(workdir)):
            raise ThinxError(f"broker workdir must not contain whitespace: {workdir}")
        self._workdir = workdir
        self._ca = ca
        self.host = host
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._logins: dict[str, tuple[str, str]] = {}  # user -> (hash, owner)
        self.service_password = secrets.token_hex(16)

    @property
    def log_path(self) -> Path:
        return self._workdir / "mosquitto.log"

    @property
    def ca_path(self) -> Path:
        return self._ca.cert_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            raise ThinxError("THiNX broker already running")
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        conf = self._write_config()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._process = spawn_mosquitto(conf, self._workdir, ThinxError)
        try:
            self._wait_for(offset, b" running", "start")
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        log.info("thinx_broker_started", host=self.host, port=self.port)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_login(self, user: str, password_hash: str, owner: str, *, reload: bool = True) -> None:
        """Let ``user`` (a udid) log in with the password hashed in ``password_hash`` (an API
        key, ``mosquitto_password_hash``) and use its owner's topics; a running broker reloads
        (blocking)."""
        if not user or any(c.isspace() or c in "#+/:" for c in user):
            raise ThinxError(f"invalid MQTT user name {user!r}")
        self._logins[user] = (password_hash, owner)
        if reload and self.running:
            assert self._process is not None
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._write_config()
            self._process.send_signal(signal.SIGHUP)
            self._wait_for(offset, b"Reloading config", "reload")

    def _write_config(self) -> Path:
        server = self._workdir / "server"
        if not (server / "cert.pem").exists():
            self._ca.issue("devcloud-thinx-broker", server, server=True, ip_addresses=(self.host,))
        passwords = [f"{SERVICE_USER}:{mosquitto_password_hash(self.service_password)}"]
        acl = ["# Generated by gateway.devcloud.thinx", f"user {SERVICE_USER}", "topic readwrite #"]
        for user, (hashed, owner) in self._logins.items():
            passwords.append(f"{user}:{hashed}")
            acl += [
                "",
                f"user {user}",
                f"topic read /{owner}/{user}",
                f"topic readwrite /{owner}/{user}/status",
            ]
        password_file = self._workdir / "passwords"
        write_atomic(password_file, ("\n".join(passwords) + "\n").encode(), 0o600)
        acl_file = self._workdir / "acl"
        write_atomic(acl_file, ("\n".join(acl) + "\n").encode(), 0o600)
        lines = [
            "# Generated by gateway.devcloud.thinx",
            "per_listener_settings false",
            "allow_anonymous false",
            "persistence false",
            "set_tcp_nodelay true",
            f"password_file {password_file}",
            f"acl_file {acl_file}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        lines += [
            "",
            f"listener {self.port} {self.host}",
            f"cafile {server / 'ca.pem'}",
            f"certfile {server / 'cert.pem'}",
            f"keyfile {server / 'privkey.pem'}",
            "require_certificate false",
            "tls_version tlsv1.2",
        ]
        conf = self._workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _wait_for(self, offset: int, text: bytes, what: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ThinxError(f"THiNX mosquitto exited ({what}); see {self.log_path}")
            try:
                with self.log_path.open("rb") as fh:
                    fh.seek(offset)
                    if text in fh.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ThinxError(f"THiNX mosquitto did not {what} in time; see {self.log_path}")
            time.sleep(0.02)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ThinxError(f"THiNX mosquitto is not listening: {exc}") from exc
                time.sleep(0.02)


@dataclass
class ThinxMisbehaviour:
    """Faults for tests."""

    wrong_md5: bool = False  # x-MD5 that does not match the artifact
    register_status: int | None = None  # answer registrations with this HTTP status
    omit_ott: bool = False  # offer FIRMWARE_UPDATE without an ott (the device POSTs for it)
    register_body: bytes | None = None  # answer registrations 200 with these raw bytes
    raw_post_firmware: bool = False  # POST /device/firmware answers raw bytes + x-MD5


@dataclass
class _Ott:
    owner: str
    udid: str
    expires: float


@dataclass
class ThinxService:
    """Owners' API keys, devices, firmware offers and one-time tokens (files in ``state_dir``)."""

    state_dir: Path
    broker: ThinxBroker
    listener: ThinxListener | None = None
    misbehaviour: ThinxMisbehaviour = field(default_factory=ThinxMisbehaviour)
    checkins: list[dict[str, Any]] = field(default_factory=list)  # registration bodies seen
    statuses: dict[str, list[Any]] = field(default_factory=dict)  # udid -> status messages
    _otts: dict[str, _Ott] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None  # the listener is called on it
    # devices.json is read, changed and written from worker threads (check-ins, statuses)
    _devices_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def firmware_dir(self) -> Path:
        return self.state_dir / FIRMWARE_DIR

    # -- files ---------------------------------------------------------------------------------

    def _read(self, name: str) -> dict[str, Any]:
        return read_json_object(self.state_dir / name, ThinxError)

    def _write(self, name: str, data: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state_dir / name, json.dumps(data, indent=2).encode() + b"\n", 0o600)

    def prepare(self) -> None:
        self.firmware_dir.mkdir(parents=True, exist_ok=True)
        devices = self._read(DEVICES_FILE)
        for udid, device in devices.items():  # logins survive a restart of the dev cloud
            if isinstance(device, dict) and isinstance(device.get("mqtt_hash"), str):
                owner = str(device.get("owner"))
                self.broker.set_login(udid, device["mqtt_hash"], owner, reload=False)

    # -- what a user does in THiNX's console ---------------------------------------------------

    def dev_owner(self) -> tuple[str, Path]:
        """The dev cloud's owner id and its API key file (made on the first start)."""
        owner_file = self.state_dir / OWNER_FILE
        key_file = self.state_dir / API_KEY_FILE
        if owner_file.is_file() and key_file.is_file():
            return owner_file.read_text().strip(), key_file
        owner = secrets.token_hex(32)  # THiNX owner ids are 64 hex digits
        self.create_api_key(owner, key_file)
        write_atomic(owner_file, owner.encode() + b"\n", 0o644)
        return owner, key_file

    def create_api_key(self, owner: str, key_file: Path | None = None) -> str:
        """A new API key for ``owner`` (stored hashed; written to ``key_file`` 0600 if given)."""
        if not owner or any(c.isspace() or c in "#+/" for c in owner):
            raise ThinxError(f"invalid owner id {owner!r}")
        key = secrets.token_hex(32)  # THiNX keys are 64 hex digits
        keys = self._read(KEYS_FILE)
        keys.setdefault(owner, []).append({"hash": _key_hash(key), "created": time.time()})
        self._write(KEYS_FILE, keys)
        if key_file is not None:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(key_file, key.encode() + b"\n", 0o600)
        return key

    def offer_firmware(
        self, owner: str, data: bytes, version: str, name: str = "firmware.bin"
    ) -> None:
        """Offer ``data`` as ``version`` to every device of ``owner`` (auto_update on)."""
        folder = self.firmware_dir / owner
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / name, data, 0o644)
        offers = self._read(FIRMWARE_FILE)
        offers[owner] = {"version": version, "file": name}
        self._write(FIRMWARE_FILE, offers)

    def withdraw_firmware(self, owner: str) -> None:
        offers = self._read(FIRMWARE_FILE)
        offers.pop(owner, None)
        self._write(FIRMWARE_FILE, offers)

    def forget_device(self, udid: str) -> None:
        """Drop a device record (as a THiNX console user deleting it): its next check-in is
        a first registration, answered with a new udid (blocking: files)."""
        with self._devices_lock:
            devices = self._read(DEVICES_FILE)
            devices.pop(udid, None)
            self._write(DEVICES_FILE, devices)

    def devices(self) -> dict[str, dict[str, Any]]:
        return {
            udid: _public(device)
            for udid, device in self._read(DEVICES_FILE).items()
            if isinstance(device, dict)
        }

    # -- the device API --------------------------------------------------------------------------

    def verify(self, owner: object, key: str | None) -> str | None:
        """None when ``key`` is one of ``owner``'s, else THiNX's reason (apikey.js)."""
        if not key:
            return "authentication_error"
        keys = self._read(KEYS_FILE).get(owner) if isinstance(owner, str) else None
        if not keys:
            return "apikey_not_found"
        digest = _key_hash(key)
        if any(hmac.compare_digest(digest, str(entry.get("hash"))) for entry in keys):
            return None
        return "owner_found_but_no_key"

    def _offer(self, owner: str) -> tuple[str, Path] | None:
        entry = self._read(FIRMWARE_FILE).get(owner)
        if not isinstance(entry, dict):
            return None
        path = self.firmware_dir / owner / str(entry.get("file"))
        if not path.is_file() or "/" in str(entry.get("file")):
            return None
        return str(entry.get("version")), path

    def _update_available(self, device: Mapping[str, Any]) -> bool:
        from gateway.updates.checkin import compare_versions

        offer = self._offer(str(device.get("owner")))
        if offer is None or not device.get("auto_update"):
            return False
        return compare_versions(offer[0], str(device.get("version") or "0")) > 0

    def register(self, registration: Mapping[str, Any], key: str | None) -> tuple[int, Any]:
        """(HTTP status, answer) for one ``POST /device/register`` (blocking: files, broker)."""
        with self._devices_lock:
            return self._register(registration, key)

    def _register(self, registration: Mapping[str, Any], key: str | None) -> tuple[int, Any]:
        owner = registration.get("owner")
        if (reason := self.verify(owner, key)) is not None:
            return 200, {"success": False, "response": reason}
        assert isinstance(owner, str) and key is not None
        self.checkins.append(dict(registration))
        devices = self._read(DEVICES_FILE)
        udid = registration.get("udid")
        existing = devices.get(udid) if isinstance(udid, str) and udid else None
        if not isinstance(existing, dict) or existing.get("owner") != owner:
            udid = str(uuid.uuid1())
            existing = {"udid": udid, "owner": owner, "auto_update": False, "created": time.time()}
        assert isinstance(udid, str)
        device = dict(existing)
        for name in ("mac", "firmware", "version", "commit", "alias", "platform", "status"):
            if isinstance(registration.get(name), str):
                device[name] = registration[name]
        device["lastupdate"] = time.time()
        device["auto_update"] = bool(device.get("auto_update")) or self._offer(owner) is not None
        new_login = device.get("key_sha256") != _key_hash(key)
        if new_login:  # THiNX's authorize_mqtt: the API key becomes the udid's MQTT password
            device["mqtt_hash"] = mosquitto_password_hash(key)
            device["key_sha256"] = _key_hash(key)
        devices[udid] = device
        self._write(DEVICES_FILE, devices)
        if new_login:
            self.broker.set_login(udid, device["mqtt_hash"], owner)
        self._notify(udid, "checkin", _public(device))
        answer: dict[str, Any] = {
            "success": True,
            "status": "OK",
            "auto_update": device["auto_update"],
            "owner": owner,
            "alias": device.get("alias"),
            "mesh_ids": [],
            "udid": udid,
            "timestamp": int(time.time()),
        }
        offer = self._offer(owner)
        if offer is not None and self._update_available(device):
            answer.update(status="FIRMWARE_UPDATE", version=offer[0])
            if not self.misbehaviour.omit_ott:
                ott = secrets.token_hex(32)
                self._otts[ott] = _Ott(owner, udid, time.time() + _OTT_TTL_S)
                answer["ott"] = ott
            answer["mac"] = device.get("mac")
            del answer["owner"], answer["success"]
            return 200, json.dumps({"registration": answer})  # device.js sends a string here
        return 200, {"registration": answer}

    def firmware_by_ott(self, ott: str) -> tuple[bytes, str] | str:
        entry = self._otts.get(ott)
        if entry is None or entry.expires < time.time():
            return "OTT_UPDATE_NOT_FOUND"
        offer = self._offer(entry.owner)
        if offer is None:
            return "OTT_UPDATE_NOT_AVAILABLE"
        entry.expires = min(entry.expires, time.time() + 3600)  # 60 min after the first use
        return self._artifact(offer[1])

    def firmware_direct(
        self, body: Mapping[str, Any], key: str | None
    ) -> tuple[bytes, str] | dict[str, Any]:
        owner, udid = body.get("owner"), body.get("udid")
        if "mac" not in body:
            return {"success": False, "response": "missing_mac"}
        if (reason := self.verify(owner, key)) is not None:
            return {"success": False, "response": reason}
        device = self._read(DEVICES_FILE).get(udid) if isinstance(udid, str) else None
        if not isinstance(device, dict) or device.get("owner") != owner:
            return {"success": False, "response": "no_such_device"}
        offer = self._offer(str(owner))
        if offer is None:
            return {"success": False, "status": "UPDATE_NOT_FOUND"}
        if not self._update_available(device):
            return {"success": False, "status": "OK"}
        return self._artifact(offer[1])

    def _artifact(self, path: Path) -> tuple[bytes, str]:
        data = path.read_bytes()
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if self.misbehaviour.wrong_md5:
            md5 = hashlib.md5(b"not the artifact", usedforsecurity=False).hexdigest()
        return data, md5

    # -- MQTT: status in, configuration out ------------------------------------------------------

    def _client(self) -> Any:
        import aiomqtt

        context = ssl.create_default_context(cafile=str(self.broker.ca_path))
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=SERVICE_USER,
            password=self.broker.service_password,
            identifier=f"thinx-service-{secrets.token_hex(4)}",
            tls_context=context,
        )

    async def push_configuration(
        self, owner: str, udid: str, values: Mapping[str, Any], *, double_encoded: bool = True
    ) -> None:
        """Publish ``{"configuration": values}`` to ``/<owner>/<udid>`` (twice JSON-encoded, as
        messenger.js does, unless ``double_encoded`` is False)."""
        payload = json.dumps({"configuration": dict(values)})
        if double_encoded:
            payload = json.dumps(payload)
        async with self._client() as client:
            await client.publish(f"/{owner}/{udid}", payload.encode(), qos=1)

    async def publish_raw(self, topic: str, payload: bytes) -> None:
        async with self._client() as client:
            await client.publish(topic, payload, qos=1)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Record what devices publish on their status topics until cancelled."""
        self._loop = asyncio.get_running_loop()
        async with self._client() as client:
            await client.subscribe("/+/+/status", qos=1)
            if ready is not None:
                ready.set()
            async for message in client.messages:
                parts = message.topic.value.split("/")
                if len(parts) != 4:
                    continue
                udid = parts[2]
                try:
                    body = json.loads(bytes(message.payload))
                except (ValueError, TypeError):
                    continue
                self.statuses.setdefault(udid, []).append(body)
                status = None
                if isinstance(body, dict):
                    if isinstance(body.get("status"), str):
                        status = body["status"]
                    registration = body.get("registration")
                    if isinstance(registration, dict) and isinstance(
                        registration.get("status"), str
                    ):
                        status = registration["status"]
                if status is not None:
                    await asyncio.to_thread(self._set_status, udid, status)

    async def watch_pushes(self, interval_s: float = 0.5) -> None:
        """Publish every ``push/*.json`` file dropped in the state folder, then delete it."""
        folder = self.state_dir / PUSH_DIR
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        while True:
            for path in sorted(await asyncio.to_thread(lambda: list(folder.glob("*.json")))):
                try:
                    push = json.loads(await asyncio.to_thread(path.read_bytes))
                    udid, values = push["udid"], push["configuration"]
                    owner = self.devices()[udid]["owner"]
                    double = push.get("double_encoded", True) is not False
                    await self.push_configuration(owner, udid, values, double_encoded=double)
                    log.info("thinx_configuration_pushed", udid=udid, keys=sorted(values))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("thinx_push_file_invalid", file=path.name, error=repr(exc))
                await asyncio.to_thread(path.unlink, missing_ok=True)
            await asyncio.sleep(interval_s)

    def _set_status(self, udid: str, status: str) -> None:
        with self._devices_lock:
            devices = self._read(DEVICES_FILE)
            device = devices.get(udid)
            if not isinstance(device, dict):
                return
            device["status"] = status
            device["status_at"] = time.time()
            self._write(DEVICES_FILE, devices)
        self._notify(udid, "status", _public(device))

    def _notify(self, udid: str, kind: str, details: dict[str, Any]) -> None:
        """Tell the listener (the dashboard) on the event loop's thread (callers run in one)."""
        if self.listener is None:
            return
        if self._loop is None:
            self.listener(udid, kind, details)
        else:
            self._loop.call_soon_threadsafe(self.listener, udid, kind, details)


# -- the HTTP app ---------------------------------------------------------------------------------

_SERVICE: Final = web.AppKey("thinx_service", ThinxService)


def _json(body: Any, status: int = 200) -> web.Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return web.Response(text=text, status=status, content_type="application/json")


async def _register(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    if service.misbehaviour.register_status is not None:
        return _json({"success": False, "response": "fault"}, service.misbehaviour.register_status)
    if service.misbehaviour.register_body is not None:
        return web.Response(
            body=service.misbehaviour.register_body, content_type="application/json"
        )
    try:
        body = await request.json()
    except ValueError:
        return _json({"success": False, "response": "no_body"}, 400)
    registration = body.get("registration") if isinstance(body, dict) else None
    if not isinstance(registration, dict) or not registration:
        return _json({"success": False, "response": "request_invalid"}, 400)
    status, answer = await asyncio.to_thread(
        service.register, registration, request.headers.get("Authentication")
    )
    return _json(answer, status)


def _binary(data: bytes, md5: str) -> web.Response:
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={"x-MD5": md5, "Content-Disposition": "attachment; filename=firmware.bin"},
    )


async def _firmware_get(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    ott = request.query.get("ott")
    if not ott:
        return _json({"success": False, "response": "OTT_MISSING"})
    result = await asyncio.to_thread(service.firmware_by_ott, ott)
    if isinstance(result, str):
        return _json({"success": False, "response": result})
    return _binary(*result)


async def _firmware_post(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    try:
        body = await request.json()
    except ValueError:
        return _json({"success": False, "response": "no_body"}, 400)
    if not isinstance(body, dict):
        return _json({"success": False, "response": "no_body"}, 400)
    if isinstance(body.get("registration"), dict):
        body = body["registration"]
    result = await asyncio.to_thread(
        service.firmware_direct, body, request.headers.get("Authentication")
    )
    if isinstance(result, dict):
        return _json(result)
    if service.misbehaviour.raw_post_firmware:
        return _binary(*result)
    data, md5 = result
    # What THiNX's server sends on this route: JSON.stringify of {md5, filesize, payload}.
    return _json(
        {"md5": md5, "filesize": len(data), "payload": {"type": "Buffer", "data": list(data)}}
    )


def thinx_app(service: ThinxService, app: web.Application | None = None) -> web.Application:
    """THiNX's device API (added to ``app``, e.g. the Provision API's, when given); serve it
    over HTTPS (``provision.server_ssl_context``)."""
    app = app if app is not None else web.Application(client_max_size=_MAX_BODY)
    app[_SERVICE] = service
    app.router.add_post("/device/register", _register)
    app.router.add_get("/device/firmware", _firmware_get)
    app.router.add_post("/device/firmware", _firmware_post)
    return app
