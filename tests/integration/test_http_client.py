"""HttpClient's general request and download against a real local HTTPS server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.core.tls import client_context, server_context
from gateway.devcloud.pki import DevCA
from gateway.updates.http import HttpClient, HttpStatusError

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    ca = DevCA.load_or_create(tmp_path / "ca")
    server = ca.issue("localhost", tmp_path / "server", server=True)
    routes = web.RouteTableDef()

    @routes.post("/echo")
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        answer = {"header": request.headers.get("X-Platform", ""), "body": body.decode()}
        return web.json_response(answer, status=400 if b"bad" in body else 200)

    @routes.post("/artifact")
    async def artifact(request: web.Request) -> web.Response:
        wanted = (await request.json())["name"]
        return web.Response(body=wanted.encode() * 100, headers={"x-MD5": "abc123"})

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(server.cert, server.key))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", server.ca
    finally:
        await runner.cleanup()


async def test_request_sends_its_headers_and_body_and_returns_the_answer(
    https: tuple[str, Path],
) -> None:
    url, ca = https
    async with HttpClient(ssl_context=client_context(ca), timeout_s=5) as http:
        reply = await http.request(
            "POST", f"{url}/echo", headers={"X-Platform": "thinx"}, data=b"hello"
        )
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"header": "thinx", "body": "hello"}


async def test_request_returns_an_error_answer_when_asked_and_raises_otherwise(
    https: tuple[str, Path],
) -> None:
    url, ca = https
    async with HttpClient(ssl_context=client_context(ca), timeout_s=5) as http:
        reply = await http.request("POST", f"{url}/echo", data=b"bad", raise_for_status=False)
        assert reply.status == 400
        assert json.loads(reply.body)["body"] == "bad"
        with pytest.raises(HttpStatusError) as raised:
            await http.request("POST", f"{url}/echo", data=b"bad")
    assert raised.value.status == 400


async def test_a_posted_download_keeps_the_answers_headers(
    https: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = https
    dest = tmp_path / "artifact.bin"
    async with HttpClient(ssl_context=client_context(ca), timeout_s=5) as http:
        downloaded = await http.download(
            f"{url}/artifact",
            dest,
            max_bytes=10_000,
            timeout_s=5,
            method="POST",
            json_body={"name": "fw"},
        )
    assert downloaded.size == 200
    assert downloaded.headers["x-md5"] == "abc123"
    assert dest.read_bytes() == b"fw" * 100
