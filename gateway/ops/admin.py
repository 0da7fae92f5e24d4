"""The local admin socket: one JSON request line in, one JSON reply line out.

``edge-gateway status`` asks it for the daemon's state; in mock mode ``edge-gateway mock set``
drives an input through it. It is a Unix socket (mode 0660), so only the service user and its
group can reach it, and nothing is exposed on the network.

Whoever can reach it is still not trusted to behave: a request line is capped
(``MAX_REQUEST_BYTES``) and must arrive within ``READ_TIMEOUT_S``, and a reply the client
does not read is given up after ``WRITE_TIMEOUT_S``; at most ``MAX_CLIENTS`` connections are
held, a newcomer replacing the one that has waited longest for its line; running out of
descriptors frees one instead of flooding the log; and a request that fails is answered with
an error, never ending the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import AdminError, GatewayError
from gateway.ops.adminclient import request  # noqa: F401 - the client side, re-exported

log = structlog.get_logger()

MAX_REQUEST_BYTES = 64 * 1024
SOCKET_MODE = 0o660
# Bounds against a client that connects and never finishes its line (or thousands of them):
# each one holds a descriptor, and the process has only so many.
MAX_CLIENTS = 16  # served at once; a newcomer beyond it replaces the longest-idle one
READ_TIMEOUT_S = 5.0  # for the request line; the CLI sends it at once
WRITE_TIMEOUT_S = 5.0  # for the reply to leave
ACCEPT_RETRY_S = 0.5  # after accept() failed with nothing to free (out of descriptors)
# Dropped clients and failed accepts: one line, then a summary at most this often.
LOG_EVERY_S = 60.0
BACKLOG = 64
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
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


def _listen(path: Path) -> socket.socket:
    """A listening, non-blocking Unix socket at ``path``. It is bound under a temporary name,
    given mode 0660 and listening before it is renamed into place: whoever sees the file can
    connect, and nobody can before the mode is set."""
    _prepare_socket_path(path)
    staged = path.with_name(path.name + "~")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staged.unlink(missing_ok=True)  # left behind by a crash
        listener.bind(str(staged))
        os.chmod(staged, SOCKET_MODE)
        listener.listen(BACKLOG)
        os.replace(staged, path)
        listener.setblocking(False)
    except OSError as exc:
        listener.close()
        staged.unlink(missing_ok=True)
        raise AdminError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return listener


class _Summary:
    """A log line for the first occurrence, then at most one summary (with counts) every
    ``LOG_EVERY_S``: thousands of hostile connections must not turn into thousands of lines."""

    def __init__(self, event: str, clock: Callable[[], float]) -> None:
        self.event = event
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.logged_at: float | None = None

    def note(self, kind: str) -> None:
        self.counts[kind] += 1
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= LOG_EVERY_S:
            self.flush()
            self.logged_at = now

    def flush(self) -> None:
        if self.counts:
            log.warning(self.event, **dict(self.counts), within_s=LOG_EVERY_S)
            self.counts.clear()


@dataclass(eq=False)
class _Client:
    accepted_at: float
    waiting: bool = True  # for its request line (from accept on: its task may not run yet)
    deadline: asyncio.Timeout | None = None  # the read timeout, once the read has begun
    evicted: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def idle(self) -> bool:
        expiring = self.deadline is not None and self.deadline.expired()
        return self.waiting and not self.evicted and not expiring

    def evict(self) -> None:
        """End the wait for the request line now (the client is answered and closed); a read
        not begun yet is not begun at all."""
        self.evicted = True
        if self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time())


class _AdminServer:
    def __init__(self, handler: Handler, max_clients: int, read_timeout_s: float) -> None:
        self.handler = handler
        self.max_clients = max_clients
        self.read_timeout_s = read_timeout_s
        self.clients: set[_Client] = set()
        clock = asyncio.get_running_loop().time
        self.dropped = _Summary("admin_clients_dropped", clock)
        self.accept_failures = _Summary("admin_accept_failed", clock)

    async def accept_forever(self, listener: socket.socket, group: asyncio.TaskGroup) -> None:
        """Our own accept loop, not ``start_unix_server``: it never holds more than
        ``max_clients`` connections, and out of descriptors it frees one instead of letting
        asyncio log (and reschedule) every failed accept()."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                self.accept_failures.note(errno.errorcode.get(exc.errno or 0, "error").lower())
                if exc.errno in _OUT_OF_RESOURCES and await self._shed_longest_idle():
                    continue
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            busy = [client for client in self.clients if not client.evicted]
            if len(busy) >= self.max_clients and not await self._shed_longest_idle(wait=False):
                self._refuse(conn)  # every slot is answering a request: come back later
                continue
            client = _Client(accepted_at=loop.time())
            self.clients.add(client)
            group.create_task(self._serve(conn, client), name="admin_client")

    async def _shed_longest_idle(self, *, wait: bool = True) -> bool:
        idle = [client for client in self.clients if client.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda client: client.accepted_at)
        oldest.evict()
        if wait:  # its descriptor is what the next accept() needs
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await oldest.done.wait()
        return True

    def _refuse(self, conn: socket.socket) -> None:
        self.dropped.note("too_many_connections")
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_reply_line({"ok": False, "error": "too many connections; try again"}))
        conn.close()

    async def _serve(self, conn: socket.socket, client: _Client) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_REQUEST_BYTES)
        except OSError:
            conn.close()
            self.clients.discard(client)
            client.done.set()
            return
        try:
            writer.write(await self._answer(reader, client))
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the client left, or does not read its reply
        finally:
            self.clients.discard(client)
            await _close(writer)
            client.done.set()

    async def _answer(self, reader: asyncio.StreamReader, client: _Client) -> bytes:
        try:
            async with asyncio.timeout(self.read_timeout_s) as deadline:
                client.deadline = deadline
                if client.evicted:  # replaced before its task could start reading
                    raise TimeoutError
                line = await reader.readline()
        except TimeoutError:
            if client.evicted:
                self.dropped.note("too_many_connections")
                return _reply_line({"ok": False, "error": "too many connections; try again"})
            self.dropped.note("read_timeout")
            error = f"no request line within {self.read_timeout_s:g} s"
            return _reply_line({"ok": False, "error": error})
        except ValueError:  # the line is longer than the reader's limit
            self.dropped.note("request_too_long")
            error = f"request longer than {MAX_REQUEST_BYTES} bytes"
            return _reply_line({"ok": False, "error": error})
        finally:
            client.deadline = None
            client.waiting = False
        try:
            return _reply_line(await _dispatch(line, self.handler))
        except Exception as exc:
            # One failing request (a handler bug, a reply that is not JSON) never ends the
            # socket: the server's task group would take the daemon down with it.
            log.error("admin_request_failed", error_type=type(exc).__name__, error=str(exc))
            return _reply_line({"ok": False, "error": "internal error; see the gateway's log"})


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.wait_closed()
    except (ConnectionError, TimeoutError):
        writer.transport.abort()


def _reply_line(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode() + b"\n"


async def serve_admin(
    path: Path,
    handler: Handler,
    ready: asyncio.Event | None = None,
    *,
    max_clients: int = MAX_CLIENTS,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> None:
    """Serve requests on ``path`` until cancelled; the socket file is removed on exit."""
    listener = await asyncio.to_thread(_listen, path)
    log.info("admin_socket_listening", path=str(path))
    if ready is not None:
        ready.set()
    server = _AdminServer(handler, max_clients, read_timeout_s)
    try:
        async with asyncio.TaskGroup() as group:
            await server.accept_forever(listener, group)
    finally:
        listener.close()
        server.dropped.flush()
        server.accept_failures.flush()
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
