"""The local admin socket: one JSON request line in, one JSON reply line out.

``edge-gateway status`` asks it for the daemon's state; in mock mode ``edge-gateway mock set``
drives an input through it. It is a Unix socket (mode 0660), so only the service user and its
group can reach it, and nothing is exposed on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import AdminError, GatewayError

log = structlog.get_logger()

MAX_REQUEST_BYTES = 64 * 1024
SOCKET_MODE = 0o660
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _socket_in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _prepare_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if _socket_in_use(path):
            raise AdminError(f"admin socket {path} is in use: is another gateway running?")
        path.unlink()  # left behind by a crash


async def serve_admin(path: Path, handler: Handler, ready: asyncio.Event | None = None) -> None:
    """Serve requests on ``path`` until cancelled; the socket file is removed on exit."""
    await asyncio.to_thread(_prepare_socket_path, path)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await _dispatch(line, handler)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_REQUEST_BYTES)
    os.chmod(path, SOCKET_MODE)
    log.info("admin_socket_listening", path=str(path))
    if ready is not None:
        ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # noqa: ASYNC240 - one unlink on the way out; no thread for it


async def _dispatch(line: bytes, handler: Handler) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"ok": False, "error": "request is not valid JSON"}
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return {"ok": False, "error": "expected a JSON object with a 'cmd' field"}
    try:
        return {"ok": True, **await handler(request)}
    except GatewayError as exc:
        return {"ok": False, "error": str(exc)}


def request(path: Path, payload: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to a running daemon (blocking; used by the CLI)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout_s)
    try:
        client.connect(str(path))
        client.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except FileNotFoundError as exc:
        raise AdminError(f"no gateway is running here: {path} does not exist") from exc
    except PermissionError as exc:
        raise AdminError(f"permission denied on {path}: run as the service user or root") from exc
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
