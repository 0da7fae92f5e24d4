"""HTTP(S) for check-in and artifact downloads, on the light HTTP/1.1 exchange in ``http11``.

One connection per request, on a TLS context from ``gateway.core.tls`` (always verified: the
system trust store or the configured CA, optionally with the device's client certificate);
plain http only where the configuration allows it (loopback). The bearer token goes only to
the check-in server's origin, never to an artifact host elsewhere. Redirects are followed only
to https on the same origin (scheme, host and port), a few hops at most; any other is refused.
Answers are read up to a cap (never whole into memory) and JSON is decoded within a nesting
bound. Downloads stream to disk in chunks, check free space as they go, resume with ``Range``
after a cut link and stop at a size cap. Every request has a total timeout and a timeout on
each read. No aiohttp here: the daemon stays light (the dev cloud keeps aiohttp's server).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self
from urllib.parse import urljoin, urlsplit

from gateway.core.http11 import Response, WireError, exchange
from gateway.errors import UpdateError
from gateway.updates.checkin import MAX_ANSWER_BYTES, OfferError, decode_json

CHUNK = 64 * 1024
READ_TIMEOUT_S = 60.0  # no byte for this long ends a download (it resumes next time)
SPACE_CHECK_BYTES = 1024 * 1024  # free disk space is checked again after this many bytes
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class HttpStatusError(UpdateError):
    """The server answered with an error status."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        self.status = status
        super().__init__(f"{_safe(url)} answered {status} {reason}".rstrip())

    @property
    def is_auth(self) -> bool:
        return self.status in (401, 403)


class HttpTransportError(UpdateError):
    """No answer: connection refused or cut, TLS failure, timeout, truncated body."""


class HttpRedirectError(UpdateError):
    """A redirect that is not followed: to another origin, to plain http, or too many."""


def redirect_problem(start: str, target: str, *, method: str, status: int) -> str | None:
    """Why a ``status`` redirect of a request to ``start`` must not go to ``target``, or None.

    Only https to ``start``'s own origin is followed: a hop to plain http or to another host
    could hand the device an offer or an artifact from someone else. A POST is followed only
    by 307/308, which keep the method and body."""
    if urlsplit(target).scheme != "https":
        return "only https redirects are followed"
    if _origin(target) != _origin(start):
        return "only redirects to the same origin (scheme, host, port) are followed"
    if method == "POST" and status not in (307, 308):
        return f"a {status} would turn the POST into a GET"
    return None


def _safe(url: str) -> str:
    """A URL for logs: without its query (presigned URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


@dataclass(frozen=True)
class JsonReply:
    status: int
    body: Any


@dataclass(frozen=True)
class HttpReply:
    """A whole (capped) answer: status, headers (names lower-case) and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def json(self, *, what: str = "the answer") -> Any:
        """The body as JSON within the nesting bound (``None`` when empty)."""
        try:
            return decode_json(self.body, what=what)
        except OfferError as exc:
            raise UpdateError(f"{_safe(self.url)}: {exc}") from exc


@dataclass(frozen=True)
class Downloaded:
    """What ``download`` wrote: the file's final size and the final answer's headers (names
    lower-case), e.g. a checksum header a platform sends beside the artifact."""

    size: int
    headers: Mapping[str, str]


class HttpClient:
    """``async with HttpClient(...) as http:`` then ``post_json``, ``fetch``, ``download``,
    ``request``."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        timeout_s: float,
        token: str | None = None,
        token_origin: str | None = None,
        user_agent: str = "edge-gateway",
    ) -> None:
        self._ssl = ssl_context
        self._timeout_s = timeout_s
        self._token = token
        self._token_origin = _origin(token_origin) if token_origin else None
        self._user_agent = user_agent
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False  # no connection outlives its request: nothing else to close

    def _headers(self, url: str) -> dict[str, str]:
        if self._token and self._token_origin == _origin(url):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: str,
        *,
        json_body: dict[str, Any] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout_s: float | None = None,
        raise_for_status: bool = True,
    ) -> AsyncIterator[Response]:
        """The final response to ``method url``, following only same-origin https redirects;
        a redirect that is not followed raises HttpRedirectError, and (unless
        ``raise_for_status`` is off) a 4xx/5xx raises HttpStatusError."""
        if not self._open:
            raise UpdateError("HTTP client used outside 'async with'")
        body = data
        own: dict[str, str] = {"User-Agent": self._user_agent}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            own["Content-Type"] = "application/json"
        elif body is None and method in ("POST", "PUT", "PATCH"):
            body = b""  # a POST says its (empty) length: some servers refuse one without
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            async with exchange(
                method,
                current,
                headers={**own, **self._headers(current), **(headers or {})},
                body=body,
                ssl_context=self._ssl,
                read_timeout_s=read_timeout_s or self._timeout_s,
            ) as response:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("location", "")
                    target = urljoin(current, location)
                    problem = "no Location" if not location else None
                    problem = problem or redirect_problem(
                        url, target, method=method, status=response.status
                    )
                    if problem is not None:
                        raise HttpRedirectError(  # the target is the server's text: bounded
                            f"{_safe(current)} redirected ({response.status}) to "
                            f"{_safe(target)[:120]}; refused: {problem}"
                        )
                    current = target
                    continue
                if response.status >= 300 and (raise_for_status or response.status < 400):
                    raise HttpStatusError(current, response.status, response.reason)
                yield response
                return
        raise HttpRedirectError(f"{_safe(url)}: more than {MAX_REDIRECTS} redirects")

    async def post_json(self, url: str, body: dict[str, Any]) -> JsonReply:
        """POST ``body``; a 2xx answer's JSON (``None`` when empty), else HttpStatusError.
        The answer is read up to ``MAX_ANSWER_BYTES`` and decoded within a nesting bound."""
        with _transport_errors(url, f"no answer in {self._timeout_s} s"):
            async with asyncio.timeout(self._timeout_s):
                async with self._request("POST", url, json_body=body) as response:
                    data = await _read_capped(response, MAX_ANSWER_BYTES, url)
                    status = response.status
        try:
            return JsonReply(status, decode_json(data, what="the answer"))
        except OfferError as exc:
            raise UpdateError(f"{_safe(url)}: {exc}") from exc

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        data: bytes | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
        raise_for_status: bool = True,
    ) -> HttpReply:
        """Any request with the client's safety rules (same-origin https redirects, the token
        only to its origin, the answer read up to ``max_bytes``). With ``raise_for_status``
        off a 4xx/5xx answer is returned too: some APIs put the reason in the body."""
        with _transport_errors(url, f"no answer in {self._timeout_s} s"):
            async with asyncio.timeout(self._timeout_s):
                async with self._request(
                    method,
                    url,
                    json_body=json_body,
                    data=data,
                    headers=headers,
                    raise_for_status=raise_for_status,
                ) as response:
                    body = await _read_capped(response, max_bytes, url)
                    return HttpReply(response.status, dict(response.headers), body, url)

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """A small file (a signature, a manifest) into memory, at most ``max_bytes``."""
        with _transport_errors(url, f"no answer in {self._timeout_s} s"):
            async with asyncio.timeout(self._timeout_s):
                async with self._request("GET", url) as response:
                    return await _read_capped(response, max_bytes, url)

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int,
        timeout_s: float,
        check_space: Callable[[int], None] | None = None,
        method: str = "GET",
        json_body: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Downloaded:
        """Stream ``url`` into ``dest``, resuming a partial ``dest`` with a Range request.

        Returns the file's final size and the answer's headers (``method``, ``json_body`` and
        ``headers`` for platforms that hand out artifacts on a POST or want headers of their own).
        ``check_space(bytes_still_to_come)`` runs (in a thread) before anything is written and
        again after every ``SPACE_CHECK_BYTES`` (bytes still to come: 0 when the server did not
        say), and may raise. The whole download has ``timeout_s``; no byte for
        ``READ_TIMEOUT_S`` (or ``timeout_s`` if shorter) ends it too. A cut link leaves the
        part written so far; the caller decides what other failures leave.
        """
        offset = await asyncio.to_thread(_size, dest)
        if offset > max_bytes:
            offset = 0
        request_headers = {**(headers or {}), **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            with _transport_errors(url, f"{_safe(url)}: download timed out", prefix=False):
                async with asyncio.timeout(timeout_s):
                    async with self._request(
                        method,
                        url,
                        json_body=json_body,
                        headers=request_headers,
                        read_timeout_s=min(READ_TIMEOUT_S, timeout_s),
                    ) as response:
                        if response.status != 206 or not _resumes_at(response, offset):
                            offset = 0  # the server sent the whole file
                        size = await _stream_to(response, dest, offset, max_bytes, check_space)
                        return Downloaded(size, dict(response.headers))
        except HttpStatusError as exc:
            if exc.status == 416 and offset:
                await asyncio.to_thread(dest.unlink, missing_ok=True)
                message = f"{_safe(url)} refused to resume; starting over next time"
                raise UpdateError(message) from exc
            raise


@contextmanager
def _transport_errors(url: str, timeout_message: str, *, prefix: bool = True) -> Iterator[None]:
    """A broken, cut or silent exchange as HttpTransportError (its message without the query);
    ``timeout_message`` for a timeout (prefixed with the URL unless ``prefix`` is off)."""
    try:
        yield
    except WireError as exc:
        raise HttpTransportError(f"{_safe(url)}: {exc}") from exc
    except TimeoutError as exc:
        message = f"{_safe(url)}: {timeout_message}" if prefix else timeout_message
        raise HttpTransportError(message) from exc


async def _stream_to(
    response: Response,
    dest: Path,
    offset: int,
    max_bytes: int,
    check_space: Callable[[int], None] | None,
) -> int:
    """Write the body to ``dest`` (appended at ``offset``, else from the start) within
    ``max_bytes`` in all; the file is flushed and fsynced whatever happens. Its final size."""
    length = response.content_length
    if length is not None and offset + length > max_bytes:
        raise UpdateError(f"artifact is {offset + length} bytes; the limit is {max_bytes}")
    if check_space is not None:
        await asyncio.to_thread(check_space, length or 0)
    size = offset
    checked = 0
    file = await asyncio.to_thread(_open, dest, append=offset > 0)
    try:
        while chunk := await response.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise UpdateError(f"artifact is larger than the limit {max_bytes}")
            await asyncio.to_thread(file.write, chunk)
            checked += len(chunk)
            if check_space is not None and checked >= SPACE_CHECK_BYTES:
                checked = 0
                to_come = 0 if length is None else max(0, offset + length - size)
                await asyncio.to_thread(check_space, to_come)
    finally:
        await asyncio.to_thread(_close, file)
    return size


async def _read_capped(response: Response, max_bytes: int, url: str) -> bytes:
    """The body, at most ``max_bytes``: a longer one is refused as soon as it shows (by its
    Content-Length, or once ``max_bytes`` + 1 bytes arrived); the connection is then dropped
    without reading the rest."""
    length = response.content_length
    if length is not None and length > max_bytes:
        raise UpdateError(f"{_safe(url)} answered {length} bytes; the limit is {max_bytes}")
    data = bytearray()
    while len(data) <= max_bytes:
        chunk = await response.read(max_bytes + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
    raise UpdateError(f"{_safe(url)} answered more than {max_bytes} bytes")


def _resumes_at(response: Response, offset: int) -> bool:
    return response.headers.get("content-range", "").startswith(f"bytes {offset}-")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open(path: Path, *, append: bool) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab" if append else "wb")


def _close(file: BinaryIO) -> None:
    file.flush()
    try:
        os.fsync(file.fileno())
    finally:
        file.close()
