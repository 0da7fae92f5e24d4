"""A small HTTP/1.1 client exchange on asyncio streams: one request per connection.

What the daemon's check-in and downloads need and nothing more (RFC 9112): the request is
written with ``Connection: close``; the answer's status line and headers are read within
bounds (line length, header count, header block size, a few interim 1xx answers); the body
is framed by chunked transfer coding, ``Content-Length`` or the connection's end, and read in
pieces with a timeout on every read. No compression is asked for (``Accept-Encoding:
identity``), no connection is reused. Malformed or cut answers raise ``WireError``; its
callers (``gateway.updates.http``, ``gateway.provisioning.getcerts``) turn it into their own
errors. Here, not in those packages: both use it and neither may import the other.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, urlsplit

from gateway.errors import GatewayError

MAX_LINE = 8 * 1024  # one status, header or chunk-size line
MAX_HEADERS = 100  # header fields in one answer (trailers included)
MAX_HEADER_BYTES = 64 * 1024  # the whole header block
MAX_INTERIM = 5  # 1xx answers skipped before the final one
STREAM_LIMIT = 64 * 1024  # the stream's buffer; a longer line is refused before it is whole
_HEX = frozenset(b"0123456789abcdefABCDEF")
DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Characters kept as they are in a request target; anything else (spaces, non-ASCII) is
# percent-encoded, as a browser would, so a URL from an offer cannot break the request line.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


T = TypeVar("T")


class WireError(GatewayError):
    """The answer broke HTTP/1.1 framing, exceeded a bound or was cut short."""


@dataclass(frozen=True)
class Target:
    """Where a request goes: from an absolute http(s) URL."""

    scheme: str
    host: str
    port: int
    request_target: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise WireError(f"not an http(s) URL (scheme {scheme!r})")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise WireError("the URL's port is not a number in range") from exc
        host = parts.hostname or ""
        if not host or _has_controls(host):
            raise WireError("the URL has no usable host")
        if parts.username is not None or parts.password is not None:
            raise WireError("credentials in the URL are not sent")
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_QUERY_SAFE)
        shown = f"[{host}]" if ":" in host else host
        if port != DEFAULT_PORTS[scheme]:
            shown += f":{port}"
        return cls(scheme, host, port, target, shown)


def _has_controls(text: str) -> bool:
    return any(ord(c) < 0x21 or ord(c) == 0x7F for c in text)


def request_head(
    method: str, target: Target, headers: Mapping[str, str], body_length: int | None
) -> bytes:
    """The request line and header block. ``headers`` win over the defaults (names compared
    without case); a name or value that could split the request is refused."""
    if not method or any(c not in _TOKEN for c in method):
        raise WireError(f"bad request method {method[:20]!r}")
    fields: dict[str, tuple[str, str]] = {
        "host": ("Host", target.host_header),
        "accept": ("Accept", "*/*"),
        "accept-encoding": ("Accept-Encoding", "identity"),
        "connection": ("Connection", "close"),
    }
    for name, value in headers.items():
        if not name or any(c not in _TOKEN for c in name):
            raise WireError(f"bad request header name {name[:40]!r}")
        if any(c in value for c in "\r\n\0"):
            raise WireError(f"request header {name} has a line break in its value")
        fields[name.lower()] = (name, value)
    if body_length is not None:
        fields["content-length"] = ("Content-Length", str(body_length))
    lines = [f"{method} {target.request_target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Response:
    """A final answer: status, reason, headers (names lower-case) and the body, read with
    ``read``. ``content_length`` is the body's declared size, None when it is not declared."""

    status: int
    reason: str
    headers: dict[str, str]
    _reader: asyncio.StreamReader = field(repr=False)
    _read_timeout_s: float = field(repr=False)
    _framing: str = "close"  # "none", "length", "chunked" or "close"
    _remaining: int = 0  # of the body ("length") or of the current chunk ("chunked")
    _done: bool = False

    @property
    def content_length(self) -> int | None:
        return self._remaining if self._framing == "length" else None

    def _setup_framing(self, method: str) -> None:
        if method == "HEAD" or self.status in (204, 304) or self.status < 200:
            self._framing, self._done = "none", True
            return
        coding = self.headers.get("transfer-encoding")
        if coding is not None:
            last = coding.split(",")[-1].strip().lower()
            self._framing = "chunked" if last == "chunked" else "close"
            self.headers.pop("content-length", None)  # RFC 9112 6.3: coding wins over length
            return
        length = self.headers.get("content-length")
        if length is None:
            return
        values = {part.strip() for part in length.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit() or len(value) > 18:
            raise WireError("the answer's Content-Length is not one number")
        self._framing, self._remaining = "length", int(value)
        self._done = self._remaining == 0

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body; b"" once it is over. An answer that ends before
        its framing says raises WireError; no byte within the read timeout, TimeoutError."""
        if self._done or size <= 0:
            return b""
        if self._framing == "close":
            data = await self._timed(self._reader.read(size))
            self._done = not data
            return data
        if self._framing == "chunked" and self._remaining == 0:
            self._remaining = await self._chunk_size()
            if self._remaining == 0:
                await self._trailers()
                self._done = True
                return b""
        data = await self._timed(self._reader.read(min(size, self._remaining)))
        if not data:
            raise WireError("the answer was cut short (the connection closed mid-body)")
        self._remaining -= len(data)
        if self._remaining == 0:
            if self._framing == "length":
                self._done = True
            else:
                await self._chunk_end()
        return data

    async def _timed(self, step: Awaitable[T]) -> T:
        return await _timed(step, self._read_timeout_s)

    async def _line(self) -> bytes:
        line = await self._timed(self._reader.readuntil(b"\n"))
        if len(line) > MAX_LINE:
            raise WireError(f"a line of the answer is longer than {MAX_LINE} bytes")
        return line.rstrip(b"\r\n")

    async def _chunk_size(self) -> int:
        line = await self._line()
        digits = line.split(b";", 1)[0].strip()
        if not digits or len(digits) > 15 or any(c not in _HEX for c in digits):
            raise WireError("a chunk size in the answer is not a hex number")
        return int(digits, 16)

    async def _chunk_end(self) -> None:
        if await self._line() != b"":
            raise WireError("a chunk of the answer does not end where its size says")

    async def _trailers(self) -> None:
        for _ in range(MAX_HEADERS + 1):
            if await self._line() == b"":
                return
        raise WireError(f"the answer has more than {MAX_HEADERS} trailer fields")


async def _timed(step: Awaitable[T], timeout_s: float) -> T:
    """``step`` within ``timeout_s`` (else TimeoutError), stream errors as WireError."""
    async with asyncio.timeout(timeout_s):
        try:
            return await step
        except asyncio.IncompleteReadError as exc:
            raise WireError("the answer was cut short (the connection closed)") from exc
        except asyncio.LimitOverrunError as exc:
            raise WireError(f"a line of the answer is longer than {MAX_LINE} bytes") from exc
        except OSError as exc:  # ConnectionError, ssl.SSLError
            raise WireError(f"the connection failed: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS: {exc.reason}" + (
            f" ({exc.verify_message})" if isinstance(exc, ssl.SSLCertVerificationError) else ""
        )
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def exchange(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None,
    ssl_context: ssl.SSLContext,
    read_timeout_s: float,
) -> AsyncIterator[Response]:
    """Send one request to ``url`` on a new connection and yield the final answer, its body
    not read yet. The connection is closed on leaving: gracefully once the body was read
    whole, at once otherwise (a capped or hostile answer is never drained)."""
    target = Target.parse(url)
    head = request_head(method, target, headers, None if body is None else len(body))
    tls = target.scheme == "https"
    try:
        async with asyncio.timeout(read_timeout_s):
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=ssl_context if tls else None,
                server_hostname=target.host if tls else None,
                limit=STREAM_LIMIT,
            )
    except OSError as exc:  # refused, unreachable, name not found, TLS handshake failed
        raise WireError(f"cannot connect to {target.host_header}: {_reason(exc)}") from exc
    finished = False
    try:
        writer.write(head + (body or b""))
        await _timed(writer.drain(), read_timeout_s)
        response = await _read_head(reader, method, read_timeout_s)
        yield response
        finished = response._done
    finally:
        if finished:
            # Not waited for: a slow TLS goodbye must not turn a whole answer into a timeout
            # (asyncio ends the closing handshake itself, within its own bound).
            writer.close()
        else:
            writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader, method: str, read_timeout_s: float) -> Response:
    """The final answer's status line and headers (interim 1xx answers skipped)."""
    for _ in range(MAX_INTERIM + 1):
        response = Response(0, "", {}, reader, read_timeout_s)
        status_line = await response._line()
        response.status, response.reason = _status(status_line)
        response.headers = await _headers(response)
        if response.status >= 200:
            response._setup_framing(method)
            return response
    raise WireError(f"the server sent more than {MAX_INTERIM} interim answers")


def _status(line: bytes) -> tuple[int, str]:
    parts = line.split(b" ", 2)
    version = parts[0]
    code = parts[1] if len(parts) > 1 else b""
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise WireError("the answer does not start with an HTTP/1.x status line")
    status = int(code)
    if not 100 <= status <= 599:
        raise WireError(f"the answer's status {status} is out of range")
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return status, "".join(c for c in reason if c.isprintable())


async def _headers(response: Response) -> dict[str, str]:
    headers: dict[str, str] = {}
    total = 0
    for _ in range(MAX_HEADERS + 1):
        line = await response._line()
        if not line:
            return headers
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise WireError(f"the answer's headers are longer than {MAX_HEADER_BYTES} bytes")
        name, colon, value = line.partition(b":")
        text = name.decode("latin-1")
        if not colon or not text or any(c not in _TOKEN for c in text) or b"\r" in value:
            raise WireError("the answer has a malformed header line")
        key = text.lower()
        decoded = value.strip(b" \t").decode("utf-8", errors="replace")
        headers[key] = f"{headers[key]}, {decoded}" if key in headers else decoded
    raise WireError(f"the answer has more than {MAX_HEADERS} header fields")
