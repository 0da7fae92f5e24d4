"""What a config reload (SIGHUP, ``systemctl reload``) has to do: the pure decision.

Comparing the running config with the newly validated one gives a ``ReloadPlan``: which
devices to re-create, whether the shadow session must restart (devices or shadow settings
changed) and whether MQTT must reconnect (its settings, or the contents of its certificate
files, changed). Settings that only a restart can apply are listed, not silently ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.core.credfiles import CredentialFileError, read_credential_file

# Top-level keys a running gateway cannot switch; a reload keeps the old value and says so.
SHADOW_KEYS = ("mqtt", "thing")  # the shadow link comes or goes only with a restart
RESTART_ONLY = (
    "state_dir",
    "admin_socket",
    "logging",
    "metrics",
    "gpio",
    "checkin",
    "ota",
    "thinx",
    "mindconnect",
)


@dataclass(frozen=True)
class ReloadPlan:
    devices_changed: frozenset[str]  # added, removed or re-configured device names
    restart_session: bool  # devices, thing or shadow settings changed
    reconnect: bool  # MQTT settings or certificate files changed
    restart_only: tuple[str, ...]  # changed keys that need a service restart

    @property
    def changes_anything(self) -> bool:
        return self.restart_session or self.reconnect


def files_digest(paths: Iterable[Path]) -> str:
    """A digest of the files' contents (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(read_credential_file(path, "TLS file"))
        except CredentialFileError as exc:  # too large, missing: the next load says why
            digest.update(f"unreadable {path}: {exc}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def tls_files(config: GatewayConfig) -> tuple[Path, ...]:
    """The shadow link's TLS files and password file (none without the shadow link)."""
    mqtt = config.mqtt
    if mqtt is None:
        return ()
    return tuple(p for p in (mqtt.ca, mqtt.cert, mqtt.key, mqtt.password_file) if p is not None)


def plan_reload(
    old: GatewayConfig, new: GatewayConfig, *, old_tls_digest: str = "", new_tls_digest: str = ""
) -> ReloadPlan:
    """The changes that take ``old`` to ``new``."""
    names = old.devices.keys() | new.devices.keys()
    devices_changed = frozenset(
        name for name in names if old.devices.get(name) != new.devices.get(name)
    )
    reconnect = old.mqtt != new.mqtt or old.thing != new.thing or old_tls_digest != new_tls_digest
    restart_session = bool(devices_changed) or old.shadow != new.shadow or reconnect
    restart_only = tuple(key for key in RESTART_ONLY if getattr(old, key) != getattr(new, key))
    if old.has_shadow != new.has_shadow:  # adding or removing the shadow link itself
        restart_only += SHADOW_KEYS
    return ReloadPlan(devices_changed, restart_session, reconnect, restart_only)


def keep_restart_only(old: GatewayConfig, new: GatewayConfig) -> GatewayConfig:
    """``new`` with the restart-only keys of ``old``: what the running gateway really uses."""
    keys = RESTART_ONLY + (SHADOW_KEYS if old.has_shadow != new.has_shadow else ())
    kept = replace(new, **{key: getattr(old, key) for key in keys})
    return kept.with_keys_given(new.keys_given)
