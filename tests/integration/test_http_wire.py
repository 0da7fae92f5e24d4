"""The light HTTP/1.1 client (``gateway.core.http11`` under ``HttpClient``) against a real
local TLS server that answers scripted raw bytes: framing (Content-Length, chunked, the
connection's end), the bounds on lines and headers, cut answers and silent servers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.core.http11 import MAX_HEADERS, MAX_LINE
from gateway.core.tls import client_context, server_context
from gateway.devcloud.pki import DevCA
from gateway.errors import UpdateError
from gateway.updates.http import HttpClient, HttpStatusError, HttpTransportError

pytestmark = pytest.mark.asyncio

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """Answers every connection with ``answer`` after reading the request (kept in
    ``requests``)."""

    url: str
    ca: Path
    answer: Answer | None = None
    requests: list[bytes] = field(default_factory=list)

    def reply(self, data: bytes, *, then_close: bool = True) -> None:
        async def send(writer: asyncio.StreamWriter) -> None:
            writer.write(data)
            await writer.drain()
            if not then_close:
                await asyncio.sleep(30)  # keep the connection open and silent

        self.answer = send

    def script(self, *answers: bytes) -> None:
        """The first connection gets the first of ``answers``, the next the next, ..."""
        queue = list(answers)

        async def send(writer: asyncio.StreamWriter) -> None:
            writer.write(queue.pop(0))
            await writer.drain()

        self.answer = send


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("wire")
    ca = DevCA.load_or_create(folder / "ca")
    server = ca.issue("localhost", folder / "server", server=True)
    return server.cert, server.key, server.ca


@pytest.fixture
async def raw(pki: tuple[Path, Path, Path]) -> AsyncIterator[RawServer]:
    cert, key, ca = pki
    holder: list[RawServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = holder[0]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            server.requests.append(head + await reader.readexactly(length))
            if server.answer is not None:
                await server.answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(cert, key))
    port = listener.sockets[0].getsockname()[1]
    holder.append(RawServer(f"https://localhost:{port}", ca))
    try:
        yield holder[0]
    finally:
        listener.close()


def client(server: RawServer, timeout_s: float = 5) -> HttpClient:
    return HttpClient(ssl_context=client_context(server.ca), timeout_s=timeout_s)


async def fetch(server: RawServer, path: str = "/x", timeout_s: float = 5) -> bytes:
    async with client(server, timeout_s) as http:
        return await http.fetch(f"{server.url}{path}", max_bytes=1_000_000)


async def test_a_content_length_body_is_read_whole(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert await fetch(raw) == b"hello"


async def test_a_chunked_body_with_extensions_and_trailers_is_read_whole(raw: RawServer) -> None:
    raw.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    assert await fetch(raw) == b"hello world"


async def test_a_body_without_length_runs_to_the_connections_end(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * 100_000)
    assert await fetch(raw) == b"z" * 100_000


async def test_an_interim_100_answer_is_skipped(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert await fetch(raw) == b"ok"


async def test_a_body_cut_before_its_content_length_is_a_transport_error(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
    with pytest.raises(HttpTransportError, match="cut short"):
        await fetch(raw)


async def test_a_chunked_body_cut_mid_chunk_is_a_transport_error(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort")
    with pytest.raises(HttpTransportError, match="cut short"):
        await fetch(raw)


async def test_a_chunked_body_without_its_last_chunk_is_a_transport_error(
    raw: RawServer,
) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
    with pytest.raises(HttpTransportError, match="cut short"):
        await fetch(raw)


async def test_a_chunk_size_that_is_not_hex_is_a_transport_error(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(HttpTransportError, match="chunk size"):
        await fetch(raw)


async def test_a_chunk_longer_than_its_size_is_a_transport_error(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(HttpTransportError, match="does not end where its size says"):
        await fetch(raw)


async def test_a_header_line_longer_than_the_bound_is_refused(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_LINE + b"\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HttpTransportError, match="longer than"):
        await fetch(raw)


async def test_an_endless_header_line_is_refused_without_reading_it_all(raw: RawServer) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(1000):  # 64 MiB if nobody stopped it
            writer.write(b"a" * 65_536)
            await writer.drain()

    raw.answer = endless
    with pytest.raises(HttpTransportError, match="longer than"):
        await fetch(raw)


async def test_more_header_fields_than_the_bound_are_refused(raw: RawServer) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(MAX_HEADERS + 1))
    raw.reply(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n")
    with pytest.raises(HttpTransportError, match="header fields"):
        await fetch(raw)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 6, "interim"),
    ],
)
async def test_a_malformed_answer_is_a_transport_error(
    raw: RawServer, answer: bytes, problem: str
) -> None:
    raw.reply(answer)
    with pytest.raises(HttpTransportError, match=problem):
        await fetch(raw)


async def test_a_silent_server_times_out_within_the_clients_timeout(raw: RawServer) -> None:
    raw.reply(b"", then_close=False)
    started = time.monotonic()
    with pytest.raises(HttpTransportError, match=r"no answer in 0.5 s"):
        await fetch(raw, timeout_s=0.5)
    assert time.monotonic() - started < 3


async def test_a_download_that_stalls_mid_body_times_out_and_keeps_its_part(
    raw: RawServer, tmp_path: Path
) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"p" * 300, then_close=False)
    dest = tmp_path / "artifact.part"
    async with client(raw) as http:
        with pytest.raises(HttpTransportError, match="download timed out"):
            await http.download(f"{raw.url}/a", dest, max_bytes=10_000, timeout_s=0.5)
    assert dest.read_bytes() == b"p" * 300


async def test_a_resumed_download_sends_its_range_and_appends_the_206_rest(
    raw: RawServer, tmp_path: Path
) -> None:
    dest = tmp_path / "artifact.part"
    dest.write_bytes(b"0123")
    raw.reply(
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 4-9/10\r\n"
        b"Content-Length: 6\r\n\r\n456789"
    )
    async with client(raw) as http:
        downloaded = await http.download(f"{raw.url}/a", dest, max_bytes=100, timeout_s=5)
    assert b"\r\nRange: bytes=4-\r\n" in raw.requests[0]
    assert downloaded.size == 10 and dest.read_bytes() == b"0123456789"


async def test_a_206_for_another_offset_restarts_the_file(raw: RawServer, tmp_path: Path) -> None:
    dest = tmp_path / "artifact.part"
    dest.write_bytes(b"0123")
    raw.reply(
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/10\r\n"
        b"Content-Length: 10\r\n\r\nabcdefghij"
    )
    async with client(raw) as http:
        downloaded = await http.download(f"{raw.url}/a", dest, max_bytes=100, timeout_s=5)
    assert downloaded.size == 10 and dest.read_bytes() == b"abcdefghij"


async def test_a_416_to_a_resume_removes_the_part(raw: RawServer, tmp_path: Path) -> None:
    dest = tmp_path / "artifact.part"
    dest.write_bytes(b"0123")
    raw.reply(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n")
    async with client(raw) as http:
        with pytest.raises(UpdateError, match="refused to resume"):
            await http.download(f"{raw.url}/a", dest, max_bytes=100, timeout_s=5)
    assert not dest.exists()


async def test_a_chunked_download_over_the_cap_stops_and_drops_the_link(
    raw: RawServer, tmp_path: Path
) -> None:
    sent: list[int] = []
    ended = asyncio.Event()

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(2000):  # 128 MiB if nobody stopped it
                writer.write(b"10000\r\n" + b"c" * 65_536 + b"\r\n")
                await writer.drain()
                sent.append(1)
        finally:
            ended.set()

    raw.answer = endless
    dest = tmp_path / "artifact.part"
    async with client(raw) as http:
        with pytest.raises(UpdateError, match="larger than the limit 200000"):
            await http.download(f"{raw.url}/a", dest, max_bytes=200_000, timeout_s=10)
    await asyncio.wait_for(ended.wait(), 5)
    assert len(sent) < 1000  # the server was cut off (beyond what socket buffers hold)


async def test_the_request_line_is_percent_encoded_and_the_host_named(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 204 No Content\r\n\r\n")
    async with client(raw) as http:
        reply = await http.request("GET", f"{raw.url}/a b/é?x=1 2&y=%41")
    assert reply.status == 204 and reply.body == b""
    head = raw.requests[0].decode()
    port = raw.url.rsplit(":", 1)[1]
    assert head.startswith("GET /a%20b/%C3%A9?x=1%202&y=%41 HTTP/1.1\r\n")
    assert f"\r\nHost: localhost:{port}\r\n" in head
    assert "\r\nConnection: close\r\n" in head


async def test_a_posted_json_body_says_its_type_and_length(raw: RawServer) -> None:
    raw.reply(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')
    async with client(raw) as http:
        reply = await http.post_json(f"{raw.url}/checkin", {"id": "gw"})
    assert reply.body == {"ok": True}
    head, _, body = raw.requests[0].partition(b"\r\n\r\n")
    assert body == b'{"id": "gw"}'
    assert b"\r\nContent-Type: application/json\r\n" in head + b"\r\n"
    assert b"\r\nContent-Length: 12\r\n" in head + b"\r\n"


async def test_a_header_value_with_a_line_break_is_never_sent(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    async with client(raw) as http:
        with pytest.raises(HttpTransportError, match="line break"):
            await http.request("GET", f"{raw.url}/x", headers={"X-A": "v\r\nX-Injected: 1"})
    assert raw.requests == []


async def test_an_error_status_is_raised_with_its_reason(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 503 Busy Now\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HttpStatusError, match="answered 503 Busy Now") as raised:
        await fetch(raw, "/x?secret=1")
    assert raised.value.status == 503 and "secret" not in str(raised.value)


async def test_a_refused_connection_is_a_transport_error_without_the_query() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the port is free again: nothing listens there
    async with HttpClient(ssl_context=client_context(None), timeout_s=5) as http:
        with pytest.raises(HttpTransportError, match="cannot connect") as raised:
            await http.fetch(f"https://127.0.0.1:{port}/a?sig=secret", max_bytes=10)
    assert "secret" not in str(raised.value)


async def test_a_server_the_ca_does_not_vouch_for_is_refused(
    raw: RawServer, tmp_path: Path
) -> None:
    other = DevCA.load_or_create(tmp_path / "other")
    raw.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    async with HttpClient(ssl_context=client_context(other.cert_path), timeout_s=5) as http:
        with pytest.raises(HttpTransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.fetch(f"{raw.url}/x", max_bytes=10)
    assert raw.requests == []


async def test_plain_http_on_loopback_is_spoken_too() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with HttpClient(ssl_context=client_context(None), timeout_s=5) as http:
            assert await http.fetch(f"http://127.0.0.1:{port}/x", max_bytes=10) == b"plain"
    finally:
        listener.close()


async def test_a_same_origin_redirect_is_followed_with_the_post_body_kept(raw: RawServer) -> None:
    raw.script(
        b"HTTP/1.1 308 Permanent Redirect\r\nLocation: /moved?x=1\r\nContent-Length: 0\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"v": "ok"}',
    )
    async with client(raw) as http:
        reply = await http.post_json(f"{raw.url}/checkin", {"id": "gw"})
    assert reply.body == {"v": "ok"}
    assert [request.split(b" ", 2)[:2] for request in raw.requests] == [
        [b"POST", b"/checkin"],
        [b"POST", b"/moved?x=1"],
    ]
    assert raw.requests[1].endswith(b'\r\n\r\n{"id": "gw"}')


async def test_the_bearer_token_goes_to_its_own_origin_only(raw: RawServer) -> None:
    raw.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    port = raw.url.rsplit(":", 1)[1]
    http = HttpClient(
        ssl_context=client_context(raw.ca),
        timeout_s=5,
        token="secret-token",
        token_origin=f"{raw.url}/provision/checkin",
    )
    async with http:
        await http.fetch(f"{raw.url}/artifacts/a", max_bytes=10)  # the token's origin
        await http.fetch(f"https://127.0.0.1:{port}/artifacts/a", max_bytes=10)  # another host
    assert b"\r\nAuthorization: Bearer secret-token\r\n" in raw.requests[0]
    assert b"secret-token" not in raw.requests[1]
