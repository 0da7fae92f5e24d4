"""The loopback credentials endpoint against local clients that misbehave: idle connections
that never send a request, and a flood of bad requests. It must keep answering the holder of
the token, and never hand out a secret otherwise."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from gateway.credentials import serving
from gateway.credentials.model import AwsCredentials
from gateway.credentials.serving import CREDENTIALS_PATH, CredentialsServer

TOKEN = "a-token-of-sixteen-or-more"
CREDS = AwsCredentials("ASIAHOSTILETEST00001", "hostile-secret", "tok", time.time() + 3600)


@pytest.fixture
async def port(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(serving, "READ_TIMEOUT_S", 0.3)  # idle clients are dropped sooner
    server = CredentialsServer(TOKEN, lambda: CREDS)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve("127.0.0.1", 0, ready))
    await asyncio.wait_for(ready.wait(), 5)
    assert server.port is not None
    try:
        yield server.port
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def ask(port: int, token: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {CREDENTIALS_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(answer.split(b" ")[1]), answer.split(b"\r\n\r\n", 1)[1]


async def test_idle_connections_cannot_lock_the_token_holder_out(port: int) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    try:
        code, body = await ask(port, TOKEN)
        assert code == 200 and json.loads(body)["AccessKeyId"] == CREDS.access_key_id
        for reader, _ in idle:  # each was closed by the server, none waits forever
            assert b"hostile-secret" not in await asyncio.wait_for(reader.read(), 5)
    finally:
        for _, writer in idle:
            writer.close()


async def test_a_flood_of_wrong_tokens_gets_no_secret_and_one_log_line(port: int) -> None:
    with capture_logs() as logs:
        answers = []
        for start in range(0, 50, 10):  # ten at a time, as a guessing script might
            guesses = (ask(port, f"guess-{n:016d}") for n in range(start, start + 10))
            answers += await asyncio.gather(*guesses)
    assert {code for code, _ in answers} == {403}
    assert all(b"hostile-secret" not in body for _, body in answers)
    assert len([e for e in logs if e["event"] == "credentials_http_refused"]) == 1
    code, _ = await ask(port, TOKEN)
    assert code == 200
