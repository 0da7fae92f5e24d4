"""``state_dir/provisioned.yaml``: what provisioning assigned (thing, endpoint, port, credential
paths; an imported Thing Batch also the broker's CA), read and checked when the config is
loaded; where provisioning keeps the pair; and ``state_dir/provision.json``, the Provision
API's device ``id`` and ``accountId`` (read by the check-in, which sends that ``id``, as Ioto's
agent keeps them from its provisioning answer).

``gateway.provisioning.credstore`` writes the files and re-exports these names; reading them
here keeps the config free of the provisioning code.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config import names
from gateway.errors import ConfigError

CERTS_DIR = "certs"
CERT_FILE = "cert.pem"
KEY_FILE = "privkey.pem"
PROVISIONED_FILE = "provisioned.yaml"
IDENTITY_FILE = "provision.json"
MAX_IDENTITY_BYTES = 16 * 1024  # {"id", "accountId"}: well under a hundred bytes
# provisioned.yaml holds a handful of short keys; anything near this is not ours.
MAX_PROVISIONED_BYTES = 64 * 1024
_PROVISIONED_MQTT_KEYS = frozenset({"host", "port", "cert", "key", "ca"})


def default_credential_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where provisioning writes the certificate and the private key."""
    folder = state_dir / CERTS_DIR
    return folder / CERT_FILE, folder / KEY_FILE


def _read_capped(path: Path, limit: int = MAX_PROVISIONED_BYTES) -> bytes:
    what = "provisioning record"
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not make loading wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as stream:
            info = os.fstat(stream.fileno())  # the file checked is the file read
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError([f"{what} {path} is not a regular file"])
            data = stream.read(limit + 1)
    except OSError as exc:
        raise ConfigError([f"cannot read {what} {path}: {exc.strerror}"]) from exc
    if len(data) > limit:
        raise ConfigError([f"{what} {path} is larger than {limit} bytes"])
    return data


def read_provisioned(state_dir: Path) -> dict[str, Any] | None:
    """What provisioning stored, checked as strictly as a fresh answer: a file written by an
    older version (or edited) with a bad thing name or port is reported as this file's fault,
    not the config's. ``ConfigError`` naming the file."""
    path = state_dir / PROVISIONED_FILE
    if not path.exists():
        return None
    raw = _read_capped(path)
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError([f"cannot read {path}: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path} must hold a mapping"])
    problems = provisioned_problems(data)
    if problems:
        raise ConfigError(
            [
                f"{path}: " + "; ".join(problems) + " (written by provisioning, not your config:"
                " fix or delete it and the certificate, then provision again)"
            ]
        )
    return data


def provisioned_problems(data: dict[Any, Any]) -> list[str]:
    """What is wrong with the contents of ``provisioned.yaml`` (pure): only the keys
    provisioning writes, each as a fresh answer would have to be."""
    problems = [
        f"unexpected key {names.shown(key)}" for key in data if key not in {"thing", "mqtt"}
    ]
    checks: list[tuple[str, object, Callable[[object, str], object]]] = []
    if "thing" in data:
        checks.append(("thing", data["thing"], names.thing_name))
    mqtt = data.get("mqtt", {})
    if not isinstance(mqtt, dict):
        return [*problems, "mqtt must be a mapping"]
    problems += [
        f"unexpected key mqtt.{names.shown(key)}"
        for key in mqtt
        if key not in _PROVISIONED_MQTT_KEYS
    ]
    if "host" in mqtt:
        checks.append(("mqtt.host", mqtt["host"], names.host_name))
    if "port" in mqtt:
        checks.append(("mqtt.port", mqtt["port"], names.port))
    for field, value, check in checks:
        try:
            check(value, field)
        except names.AnswerError as exc:
            problems.append(str(exc))
    problems += [
        f"mqtt.{name} {names.shown(mqtt[name])} is not a file path"
        for name in ("cert", "key", "ca")
        if name in mqtt and not (isinstance(mqtt[name], str) and mqtt[name])
    ]
    return problems


# -- the Provision API's device identity -----------------------------------------------------


@dataclass(frozen=True)
class DeviceIdentity:
    """What a getCerts answer said the device is: its ``id`` (sent by check-ins instead of the
    thing name) and, when given, the ``accountId`` it was claimed into."""

    id: str
    account_id: str | None = None

    def to_json(self) -> bytes:
        data = {"id": self.id}
        if self.account_id is not None:
            data["accountId"] = self.account_id
        return json.dumps(data, indent=2).encode() + b"\n"


def read_identity(state_dir: Path) -> DeviceIdentity | None:
    """``state_dir/provision.json`` if provisioning wrote one (blocking); ``ConfigError``
    naming the file when it holds anything but a valid ``id`` and optional ``accountId``."""
    path = state_dir / IDENTITY_FILE
    if not path.exists():
        return None
    raw = _read_capped(path, MAX_IDENTITY_BYTES)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ConfigError([f"{path} is not JSON (written by provisioning: delete it)"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path} must hold a JSON object"])
    problems = [f"unexpected key {names.shown(key)}" for key in data if key not in _IDENTITY_KEYS]
    try:
        device = names.cloud_id(data.get("id"), "id")
        account = data.get("accountId")
        account = None if account is None else names.cloud_id(account, "accountId")
    except names.AnswerError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(
            [f"{path}: " + "; ".join(problems) + " (written by provisioning: delete it)"]
        )
    return DeviceIdentity(device, account)


_IDENTITY_KEYS = frozenset({"id", "accountId"})
