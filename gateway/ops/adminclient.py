"""The admin socket's client side: one JSON request line out, one JSON reply line back.

Kept apart from the server (``gateway.ops.admin``) so that ``edge-gateway status`` and
``mock set`` load only ``socket`` and ``json``: no asyncio, no structlog.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from gateway.errors import AdminError


def _connect(path: Path, timeout_s: float) -> socket.socket:
    """A connected client socket. A Unix socket whose backlog is full refuses at once (EAGAIN)
    rather than waiting: retry until ``timeout_s``, as the daemon frees a slot within ms."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(timeout_s)
        try:
            client.connect(str(path))
        except BlockingIOError:
            client.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
            continue
        except BaseException:
            client.close()
            raise
        return client


def request(path: Path, payload: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to a running daemon (blocking; used by the CLI)."""
    try:
        client = _connect(path, timeout_s)
    except FileNotFoundError as exc:
        raise AdminError(f"no gateway is running here: {path} does not exist") from exc
    except PermissionError as exc:
        raise AdminError(f"permission denied on {path}: run as the service user or root") from exc
    except OSError as exc:
        raise AdminError(f"cannot talk to the gateway at {path}: {exc}") from exc
    try:
        client.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except OSError as exc:
        raise AdminError(f"cannot talk to the gateway at {path}: {exc}") from exc
    finally:
        client.close()
    try:
        reply = json.loads(b"".join(chunks))
    except json.JSONDecodeError as exc:
        raise AdminError(f"the gateway at {path} sent an invalid reply") from exc
    if not isinstance(reply, dict):
        raise AdminError(f"the gateway at {path} sent an invalid reply")
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error", "request refused")))
    return reply
