"""Attack (issue 19): the admin socket held open by idle, half-sent connections.

Was: 1,100 connections that never finished their request line (``readline`` had no timeout)
used every descriptor of the daemon, and asyncio logged 212 MB of "socket.accept() out of
system resource" in 20 s.

Now: at most ``MAX_CLIENTS`` connections are served at once, a newcomer replaces the
longest-idle one, the request line has a read timeout and a length cap, and failed accepts are
logged once and summed up. Tests run a real ``edge-gateway run`` process (its descriptor limit
lowered with prlimit) or ``serve_admin`` on a real Unix socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.devcloud import MosquittoBroker
from gateway.errors import GatewayError
from gateway.ops.admin import MAX_CLIENTS, MAX_REQUEST_BYTES, request, serve_admin
from tests.integration.harness import until, write_config

pytestmark = pytest.mark.integration

HALF_A_REQUEST = b'{"cmd": "sta'


@contextmanager
def idle_connections(path: Path, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send half a request line and then wait, as the attack
    did; connections the kernel's backlog has no room for are simply not made."""
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                client.connect(str(path))
                client.send(HALF_A_REQUEST)
            except OSError:  # the backlog is full (EAGAIN) or the server let it go
                client.close()
                continue
            made.append(client)
        yield made
    finally:
        for client in made:
            client.close()


async def replies(clients: list[socket.socket], timeout: float = 10) -> list[dict[str, Any]]:
    """The one reply line each client gets, waiting (bounded) until every one has it."""
    got: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        while len(got) < len(clients):
            for index, client in enumerate(clients):
                if index not in got:
                    with suppress(BlockingIOError):
                        got[index] = json.loads(client.recv(4096))
            await asyncio.sleep(0.02)
    return list(got.values())


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_idle_connections_at_the_descriptor_limit_neither_block_status_nor_flood_the_log(
    broker: MosquittoBroker, tmp_path: Path, thing: str
) -> None:
    config = write_config(tmp_path, broker, thing)
    sock = tmp_path / "admin.sock"
    log_path = tmp_path / "gateway.log"
    command = [sys.executable, "-m", "gateway", "run", "-c", str(config), "--mock-gpio"]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
    try:
        await until(sock.exists, timeout=15)
        await asyncio.to_thread(request, sock, {"cmd": "status"})
        # Leave the daemon a handful of descriptors, fewer than the admin socket's cap: the
        # accept() that needs one more now fails with EMFILE, as with the 1,100 connections.
        baseline = open_descriptors(process.pid)
        _, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (baseline + 6, hard))
        with idle_connections(sock, 1100) as attackers:
            assert len(attackers) > MAX_CLIENTS
            for _ in range(3):  # while the attackers hold on, status answers every time
                status = await asyncio.to_thread(request, sock, {"cmd": "status"}, timeout_s=5)
                assert status["ok"] is True and status["mock_gpio"] is True
                await asyncio.sleep(0.5)
            assert process.returncode is None
        await asyncio.sleep(1.0)  # what the daemon logs while the attack goes on and ends
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
    text = log_path.read_text()
    assert "out of system resource" not in text
    assert text.count("admin_accept_failed") <= 2  # the first one, then one summary at stop
    assert log_path.stat().st_size < 64 * 1024


@asynccontextmanager
async def admin_socket(path: Path, *, read_timeout_s: float = 5.0) -> AsyncIterator[list[str]]:
    """``serve_admin`` on a real Unix socket; yields the commands it handled."""
    handled: list[str] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        handled.append(req["cmd"])
        if req["cmd"] == "boom":
            raise ValueError("a handler bug")
        return {"connected": True}

    ready = asyncio.Event()
    task = asyncio.ensure_future(serve_admin(path, handler, ready, read_timeout_s=read_timeout_s))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield handled
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not path.exists()


async def test_idle_connections_are_capped_answered_and_timed_out(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    with capture_logs() as logs:
        async with admin_socket(path, read_timeout_s=0.5) as handled:
            with idle_connections(path, 200) as attackers:
                status = await asyncio.to_thread(request, path, {"cmd": "status"})
                assert status == {"ok": True, "connected": True} and handled == ["status"]
                # Each attacker is told and closed: at most MAX_CLIENTS of them were held
                # until the read timeout, the others were replaced by newcomers.
                errors = [reply["error"] for reply in await replies(attackers)]
    timed_out = errors.count("no request line within 0.5 s")
    replaced = errors.count("too many connections; try again")
    assert 1 <= timed_out <= MAX_CLIENTS and timed_out + replaced == len(attackers)
    dropped = [entry for entry in logs if entry["event"] == "admin_clients_dropped"]
    assert 1 <= len(dropped) <= 2  # the first drop, then one summary with the counts
    assert sum(entry.get("too_many_connections", 0) for entry in dropped) == replaced
    assert sum(entry.get("read_timeout", 0) for entry in dropped) == timed_out


async def test_an_overlong_request_line_gets_an_error_reply(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    async with admin_socket(path) as handled:
        long_request = {"cmd": "status", "pad": "x" * (MAX_REQUEST_BYTES + 10)}
        with pytest.raises(GatewayError, match=f"request longer than {MAX_REQUEST_BYTES} bytes"):
            await asyncio.to_thread(request, path, long_request)
        assert handled == []
        assert await asyncio.to_thread(request, path, {"cmd": "status"}) == {
            "ok": True,
            "connected": True,
        }


async def test_a_failing_handler_is_an_error_reply_and_the_socket_keeps_serving(
    tmp_path: Path,
) -> None:
    path = tmp_path / "admin.sock"
    with capture_logs() as logs:
        async with admin_socket(path) as handled:
            with pytest.raises(GatewayError, match="internal error"):
                await asyncio.to_thread(request, path, {"cmd": "boom"})
            assert (await asyncio.to_thread(request, path, {"cmd": "status"}))["ok"] is True
            assert handled == ["boom", "status"]
    [failed] = [entry for entry in logs if entry["event"] == "admin_request_failed"]
    assert failed["error_type"] == "ValueError"
