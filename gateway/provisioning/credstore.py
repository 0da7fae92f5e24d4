"""Where the gateway keeps its credentials, and how they are written (blocking file I/O).

Provisioned credentials live in ``state_dir/certs/`` (``cert.pem``, ``privkey.pem``) and the
endpoint, port and thing name the cloud assigned in ``state_dir/provisioned.yaml``, which the
config loader merges under the explicit config. Every file is written through a temp file
created with its final mode (0600 for keys) and ``os.replace`` (``gateway.core.atomicfile``), so a
reader (or a power cut) never sees a half-written or briefly world-readable key. A renewed pair
replaces the current one only once both files are complete; the previous pair is kept as
``*.old`` until the new one has connected.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gateway.config import provisioned

# The file names and provisioned_problems stay importable from here; the config owns them.
from gateway.config.provisioned import (  # noqa: F401
    CERT_FILE,
    CERTS_DIR,
    IDENTITY_FILE,
    KEY_FILE,
    PROVISIONED_FILE,
    DeviceIdentity,
    provisioned_problems,
)
from gateway.core.atomicfile import AtomicWriteError, fsync_dir, stage, write_atomic
from gateway.core.credfiles import read_credential_file
from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

OLD_SUFFIX = ".old"


class CredentialStoreError(GatewayError):
    """Credentials could not be written or read."""


@dataclass(frozen=True)
class CredentialPaths:
    cert: Path
    key: Path

    @property
    def old_cert(self) -> Path:
        return self.cert.with_name(self.cert.name + OLD_SUFFIX)

    @property
    def old_key(self) -> Path:
        return self.key.with_name(self.key.name + OLD_SUFFIX)

    def exists(self) -> bool:
        return self.cert.is_file() and self.key.is_file()


def default_paths(state_dir: Path) -> CredentialPaths:
    return CredentialPaths(*provisioned.default_credential_paths(state_dir))


def paths_of(config: GatewayConfig) -> CredentialPaths:
    """The shadow link's certificate and key, as ``config`` names them."""
    mqtt = config.shadow_mqtt
    assert mqtt.cert is not None and mqtt.key is not None  # the config requires them here
    return CredentialPaths(mqtt.cert, mqtt.key)


def _make_dirs(paths: CredentialPaths) -> None:
    for folder in {paths.cert.parent, paths.key.parent}:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CredentialStoreError(f"cannot create {folder}: {exc.strerror}") from exc


def install_pair(
    paths: CredentialPaths, cert_pem: bytes, key_pem: bytes, *, keep_old: bool = False
) -> None:
    """Put a certificate and its key in place: both are staged completely first, then renamed
    (key first: the certificate's presence marks a complete pair). With ``keep_old`` the
    current pair is copied to ``*.old`` before it is replaced."""
    _make_dirs(paths)
    staged: list[Path] = []
    try:
        key_tmp = stage(paths.key, key_pem, 0o600)
        staged.append(key_tmp)
        cert_tmp = stage(paths.cert, cert_pem, 0o644)
        staged.append(cert_tmp)
        if keep_old and paths.exists():
            old_key = read_credential_file(paths.key, "private key")
            write_atomic(paths.old_key, old_key, 0o600)
            write_atomic(paths.old_cert, read_credential_file(paths.cert, "certificate"), 0o644)
        os.replace(key_tmp, paths.key)
        os.replace(cert_tmp, paths.cert)
        staged.clear()
    except AtomicWriteError:
        raise  # it names the file already
    except OSError as exc:
        raise CredentialStoreError(f"cannot install {paths.cert}: {exc.strerror}") from exc
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    fsync_dir(paths.cert.parent)


def has_old_pair(paths: CredentialPaths) -> bool:
    return paths.old_cert.is_file() and paths.old_key.is_file()


def restore_old_pair(paths: CredentialPaths) -> None:
    """Put the kept ``*.old`` pair back (the new one never connected)."""
    if not has_old_pair(paths):
        raise CredentialStoreError(f"no previous pair next to {paths.cert} to go back to")
    try:
        os.replace(paths.old_key, paths.key)
        os.replace(paths.old_cert, paths.cert)
    except OSError as exc:
        raise CredentialStoreError(f"cannot restore {paths.cert}: {exc.strerror}") from exc
    fsync_dir(paths.cert.parent)


def discard_old_pair(paths: CredentialPaths) -> None:
    paths.old_key.unlink(missing_ok=True)
    paths.old_cert.unlink(missing_ok=True)


def read_pair(paths: CredentialPaths) -> tuple[bytes, bytes]:
    """The certificate and key (each size-checked before it is read)."""
    return (
        read_credential_file(paths.cert, "certificate"),
        read_credential_file(paths.key, "private key"),
    )


def key_file_facts(key: Path) -> tuple[int, bool]:
    """The key file's mode and whether its group is dedicated (no other user is in it)."""
    try:
        info = key.stat()
    except OSError as exc:
        raise CredentialStoreError(f"cannot read private key {key}: {exc.strerror}") from exc
    return info.st_mode, _group_is_dedicated(info.st_gid, info.st_uid)


def _group_is_dedicated(gid: int, owner_uid: int) -> bool:
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    allowed = {os.geteuid(), owner_uid}
    allowed_names = set()
    for uid in allowed:
        with contextlib.suppress(KeyError):
            allowed_names.add(pwd.getpwuid(uid).pw_name)
    if any(member not in allowed_names for member in group.gr_mem):
        return False
    return all(user.pw_uid in allowed for user in pwd.getpwall() if user.pw_gid == gid)


# -- provisioned.yaml ------------------------------------------------------------------------


def write_provisioned(state_dir: Path, data: dict[str, Any]) -> None:
    """What the cloud assigned (thing, endpoint, port, credential paths); no secrets."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CredentialStoreError(f"cannot create {state_dir}: {exc.strerror}") from exc
    text = "# Written by edge-gateway provisioning; the config file's own values win.\n"
    text += yaml.safe_dump(data, sort_keys=False)
    write_atomic(state_dir / PROVISIONED_FILE, text.encode(), 0o644)


def read_provisioned(state_dir: Path) -> dict[str, Any] | None:
    """What provisioning stored (see ``gateway.config.provisioned``); ``CredentialStoreError``
    naming the file if it is unreadable or holds what provisioning never writes."""
    try:
        return provisioned.read_provisioned(state_dir)
    except ConfigError as exc:
        raise CredentialStoreError("; ".join(exc.problems)) from exc


def write_identity(state_dir: Path, identity: DeviceIdentity | None) -> None:
    """``state_dir/provision.json`` (0600, atomic) with the Provision API's device ``id`` and
    ``accountId``; ``None`` removes a previous one, so a thing provisioned another way (or
    imported) checks in under its own name, never under a stale id."""
    path = state_dir / IDENTITY_FILE
    if identity is None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise CredentialStoreError(f"cannot remove {path}: {exc.strerror}") from exc
        return
    write_atomic(path, identity.to_json(), 0o600)
