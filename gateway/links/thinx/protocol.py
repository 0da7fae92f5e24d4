"""THiNX's device contract, pure (no I/O): the check-in body, its answers, the MQTT topics and
messages, and the status string.

Sources (read, not copied): suculent/thinx-device-api ``lib/router.deviceapi.js`` (routes,
``Authentication`` header), ``lib/thinx/device.js`` (``register``, ``update_device_and_respond``,
``firmware``, ``ott_update``), ``lib/thinx/util.js`` (``responder``: ``{"success", "response"}``
with HTTP 200), ``lib/thinx/apikey.js`` (the error strings), ``lib/thinx/messenger.js``
(``publish``/``push``: topics and the configuration push); suculent/thinx-firmware-esp8266
``src/THiNXLib.cpp`` (``generate_checkin_body``, the request headers, ``start_mqtt``: user
name = udid, password = API key, Last Will ``{"status": "disconnected"}`` on the status topic;
``publish_status``/``publish_status_unretained``; ``setDashboardStatus``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Formatter
from typing import Any

from gateway.core.jsonlimits import nests_deeper_than

MAX_ANSWER_BYTES = 64 * 1024  # a registration answer is a few hundred bytes
MAX_MESSAGE_BYTES = 64 * 1024  # an MQTT message from the server (a configuration push)
MAX_JSON_DEPTH = 16
MAX_STATUS_CHARS = 512
ERROR_MARK = "#e"  # the console shows a status with "#e" as an error ...
WARNING_MARK = "#w"  # ... and with "#w" as a warning
LAST_WILL = b'{"status": "disconnected"}'  # THiNXLib: THiNX::lastWill

# THiNXLib sends these on every request to /device/register (send_data_secure).
REQUEST_HEADERS = {
    "Origin": "device",
    "User-Agent": "THiNX-Client",
    "Content-Type": "application/json",
    "Accept": "application/json",
}


class ThinxProtocolError(ValueError):
    """The server's answer or message is not what THiNX sends."""


def normalized_mac(mac: str) -> str:
    """Upper case with ':' separators (device.js ``normalizedMAC``)."""
    digits = mac.replace(":", "").replace("-", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def device_topic(owner: str, udid: str) -> str:
    """What the server publishes to (messenger.js ``publish``: "/" + owner + "/" + udid)."""
    return f"/{owner}/{udid}"


def status_topic(owner: str, udid: str) -> str:
    """Where the device reports (THiNXLib ``thinx_mqtt_status_channel``)."""
    return f"/{owner}/{udid}/status"


@dataclass(frozen=True)
class Identity:
    """What a check-in says about this device."""

    mac: str
    firmware: str  # e.g. "edge-gateway-1.2.0" (THiNXLib: THINX_FIRMWARE_VERSION)
    version: str  # THiNXLib: thinx_firmware_version_short
    commit: str | None
    owner: str
    alias: str | None
    platform: str


def registration_body(identity: Identity, *, udid: str, status: str) -> dict[str, Any]:
    """``{"registration": {...}}`` as THiNXLib's ``generate_checkin_body`` builds it: mac,
    firmware, version, commit, owner, alias, udid, status and platform. THiNXLib leaves out
    empty ones; ``udid`` is sent empty until the server has assigned one (the issue's contract;
    device.js treats an absent or empty udid alike and assigns a new one)."""
    registration: dict[str, Any] = {
        "mac": identity.mac,
        "firmware": identity.firmware,
        "version": identity.version,
        "owner": identity.owner,
        "udid": udid,
        "status": status,
        "platform": identity.platform,
    }
    if identity.commit:
        registration["commit"] = identity.commit
    if identity.alias:
        registration["alias"] = identity.alias
    return {"registration": registration}


def decode_json(data: bytes | str, *, what: str, max_bytes: int = MAX_ANSWER_BYTES) -> Any:
    """JSON within a size and nesting bound; a JSON string that itself holds a JSON object or
    array is decoded once more (messenger.js ``push`` hands ``JSON.stringify(...)`` to
    ``publish``, which stringifies it again; device.js answers FIRMWARE_UPDATE with a string)."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise ThinxProtocolError(f"{what} is larger than {max_bytes} bytes")
    value: Any = raw
    for _ in range(2):
        if not isinstance(value, bytes | str):
            break
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        if nests_deeper_than(text.encode(), MAX_JSON_DEPTH):
            raise ThinxProtocolError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ThinxProtocolError(f"{what} is not JSON") from exc
        if isinstance(value, str) and not value.lstrip().startswith(("{", "[")):
            break  # a plain string, not JSON inside JSON
    return value


@dataclass(frozen=True)
class Registered:
    """``{"registration": {"success": true, "status": "OK", ...}}`` (device.js
    ``update_device_and_respond`` for a known device, ``register`` for a new one)."""

    udid: str
    owner: str | None
    alias: str | None
    auto_update: bool | None
    timestamp: float | None


@dataclass(frozen=True)
class FirmwareUpdate:
    """``{"registration": {"status": "FIRMWARE_UPDATE", "ott", "version", "udid", ...}}`` —
    no ``success`` there (device.js deletes it, and ``owner``)."""

    udid: str | None
    version: str
    ott: str | None
    alias: str | None
    mac: str | None


@dataclass(frozen=True)
class Refused:
    """``{"success": false, "response": "<reason>"}`` (util.js ``responder``), HTTP 200:
    authentication_error, apikey_not_found, owner_found_but_no_key, invalid owner:..."""

    reason: str
    extra: Mapping[str, Any] = field(default_factory=dict)


Answer = Registered | FirmwareUpdate | Refused

# Reasons that mean the API key or owner is wrong (a retry cannot fix them): apikey.js
# ``verify``/``log_invalid_key`` and device.js ``register``.
AUTH_REASONS = ("authentication_error", "apikey_not_found", "owner_found_but_no_key")


def is_auth_failure(reason: str) -> bool:
    return reason in AUTH_REASONS or reason.startswith("invalid owner")


def _text(value: object, limit: int = 128) -> str | None:
    if isinstance(value, str) and value and len(value) <= limit:
        return value
    return None


def parse_answer(body: bytes) -> Answer:
    """The answer to ``POST /device/register``."""
    decoded = decode_json(body, what="the registration answer")
    if not isinstance(decoded, Mapping):
        raise ThinxProtocolError("the registration answer is not a JSON object")
    if decoded.get("success") is False and "registration" not in decoded:
        response = decoded.get("response")
        reason = response if isinstance(response, str) else json.dumps(response)[:200]
        return Refused(reason[:200])
    registration = decoded.get("registration")
    if not isinstance(registration, Mapping):
        raise ThinxProtocolError("the answer has no 'registration' object")
    status = registration.get("status")
    if registration.get("success") is False:
        reason = registration.get("response") or status or "registration failed"
        return Refused(str(reason)[:200])
    if status == "FIRMWARE_UPDATE":
        version = _text(registration.get("version"), 64)
        if version is None:
            raise ThinxProtocolError("FIRMWARE_UPDATE without a 'version'")
        return FirmwareUpdate(
            udid=_text(registration.get("udid")),
            version=version,
            ott=_text(registration.get("ott"), 256),
            alias=_text(registration.get("alias")),
            mac=_text(registration.get("mac"), 32),
        )
    if status != "OK" and registration.get("success") is not True:
        raise ThinxProtocolError(f"unknown registration status {str(status)[:40]!r}")
    udid = _text(registration.get("udid"))
    if udid is None:
        raise ThinxProtocolError("the registration answer has no 'udid'")
    auto_update = registration.get("auto_update")
    timestamp = registration.get("timestamp")
    return Registered(
        udid=udid,
        owner=_text(registration.get("owner")),
        alias=_text(registration.get("alias")),
        auto_update=auto_update if isinstance(auto_update, bool) else None,
        timestamp=float(timestamp)
        if isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
        else None,
    )


@dataclass(frozen=True)
class FirmwareAnswer:
    """A JSON answer to ``POST /device/firmware`` that carries no artifact: ``{"success":
    false, "status": "UPDATE_NOT_FOUND" | "OK"}`` means nothing to do (device.js ``firmware``)."""

    nothing_to_do: bool
    reason: str


@dataclass(frozen=True)
class WrappedFirmware:
    """The artifact as THiNX's server answers ``POST /device/firmware``: JSON of device.js
    ``update_binary``'s ``{md5, filesize, payload}``, the payload a Node Buffer serialised as
    ``{"type": "Buffer", "data": [0-255, ...]}`` (router.deviceapi.js ``Util.respond``)."""

    data: bytes
    md5: str


def unwrap_firmware(answer: object) -> WrappedFirmware | None:
    """The artifact inside a decoded JSON answer of that shape, None for any other answer
    (a status); ``ThinxProtocolError`` when it has the shape but not a usable artifact."""
    if not isinstance(answer, Mapping) or "payload" not in answer:
        return None
    payload, md5, size = answer.get("payload"), answer.get("md5"), answer.get("filesize")
    if not isinstance(payload, Mapping) or payload.get("type") != "Buffer":
        raise ThinxProtocolError("the firmware payload is not a serialised Buffer")
    values = payload.get("data")
    if not isinstance(values, list) or not all(
        type(value) is int and 0 <= value <= 255 for value in values
    ):
        raise ThinxProtocolError("the firmware payload's data is not a list of bytes")
    if not isinstance(md5, str) or not md5.strip():
        raise ThinxProtocolError("the wrapped firmware has no md5")
    if size is not None and size != len(values):
        raise ThinxProtocolError(f"the wrapped firmware is {len(values)} bytes, filesize {size}")
    return WrappedFirmware(bytes(values), md5.strip())


def parse_firmware_answer(body: bytes) -> FirmwareAnswer:
    decoded = decode_json(body, what="the firmware answer")
    if not isinstance(decoded, Mapping):
        raise ThinxProtocolError("the firmware answer is not a JSON object")
    status = decoded.get("status")
    if status in ("UPDATE_NOT_FOUND", "OK"):
        return FirmwareAnswer(True, str(status))
    response = decoded.get("response", status)
    return FirmwareAnswer(False, str(response)[:200])


@dataclass(frozen=True)
class ConfigurationPush:
    """``{"configuration": {...}}`` (messenger.js ``push``: the owner's environment values)."""

    values: dict[str, Any]


@dataclass(frozen=True)
class OtherMessage:
    """A message the gateway takes note of but does not act on (a registration reply, a
    notification); ``kind`` is its top-level key."""

    kind: str


Inbound = ConfigurationPush | OtherMessage

KNOWN_KINDS = ("registration", "notification", "FIRMWARE_UPDATE")


def parse_message(payload: bytes) -> Inbound:
    """A message on ``/<owner>/<udid>``, plain or double-encoded JSON."""
    decoded = decode_json(payload, what="the message", max_bytes=MAX_MESSAGE_BYTES)
    if not isinstance(decoded, Mapping):
        raise ThinxProtocolError("the message is not a JSON object")
    if "configuration" in decoded:
        values = decoded["configuration"]
        if not isinstance(values, Mapping):
            raise ThinxProtocolError("'configuration' is not an object")
        if not all(isinstance(key, str) for key in values):
            raise ThinxProtocolError("'configuration' keys must be strings")
        return ConfigurationPush(dict(values))
    for kind in KNOWN_KINDS:
        if kind in decoded:
            return OtherMessage(kind)
    raise ThinxProtocolError("unknown message")


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in Formatter().parse(template) if name]


def _shown(value: object) -> str:
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render_status(
    template: str,
    values: Mapping[str, object],
    *,
    errors: bool,
    main_link_down: bool,
    ota: str | None = None,
) -> str:
    """The status string: the template over device values (an unknown device shows "?"),
    "(update ...)" while one runs, " #e" while the gateway reports errors, " #w" while the
    link to the main cloud is down; at most ``MAX_STATUS_CHARS``."""
    shown = {name: _shown(values.get(name)) for name in template_fields(template)}
    text = template.format_map(shown)
    if ota:
        text += f" (update {ota})"
    if errors:
        text += f" {ERROR_MARK}"
    if main_link_down:
        text += f" {WARNING_MARK}"
    return text[:MAX_STATUS_CHARS]


def status_message(status: str) -> bytes:
    """``{"status": "<s>"}`` on the status topic (THiNXLib ``setDashboardStatus``)."""
    return json.dumps({"status": status}).encode()
