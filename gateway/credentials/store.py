"""The credentials' copy in ``state_dir`` (blocking file I/O: call from a thread on the loop).

``state_dir/aws-credentials.json`` holds the last credentials fetched, in the
``credential_process`` shape plus the region, written atomically with mode 0600 (never briefly
readable by anyone else) so a restart, or ``edge-gateway credentials``, finds them without a
new fetch. Reading is size-checked; a damaged file reads as none.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.core.atomicfile import AtomicWriteError, write_atomic
from gateway.core.credfiles import CredentialFileError, read_credential_file
from gateway.credentials.model import AwsCredentials, CredentialsError

CREDENTIALS_FILE = "aws-credentials.json"


def credentials_path(state_dir: Path) -> Path:
    return state_dir / CREDENTIALS_FILE


def save(path: Path, credentials: AwsCredentials) -> None:
    """Replace the stored credentials (0600, atomic, durable)."""
    data = json.dumps(credentials.to_json(), sort_keys=True).encode() + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except AtomicWriteError as exc:
        raise CredentialsError(str(exc)) from exc
    except OSError as exc:
        raise CredentialsError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load(path: Path) -> AwsCredentials | None:
    """The stored credentials, or None when there are none. A file that cannot be read (its
    permissions) raises CredentialsError; one that is damaged reads as none."""
    try:
        data = read_credential_file(path, "credentials file")
    except CredentialFileError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None
        raise CredentialsError(str(exc)) from exc
    try:
        return AwsCredentials.from_json(json.loads(data))
    except (ValueError, CredentialsError):
        return None
