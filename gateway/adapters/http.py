"""HTTP(S) for check-in and artifact downloads: the only module importing aiohttp's client.

One ``ClientSession`` per ``HttpClient``; TLS is always verified (the system trust store or the
configured CA), optionally with the device's client certificate (mutual TLS). The bearer token
goes only to the check-in server's origin, never to an artifact host elsewhere. Downloads stream
to disk in chunks, resume with ``Range`` after a cut link and stop at a size cap.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self
from urllib.parse import urlsplit

from gateway.errors import UpdateError

if TYPE_CHECKING:  # imported on first use instead: aiohttp costs ~20 MB of RSS
    import aiohttp

CHUNK = 64 * 1024
READ_TIMEOUT_S = 60.0  # no byte for this long ends a download (it resumes next time)


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


def _safe(url: str) -> str:
    """A URL for logs: without its query (presigned URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def client_ssl_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A verifying TLS >= 1.2 client context; with ``cert``/``key`` for mutual TLS (blocking)."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None and key is not None:
            context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise UpdateError(f"cannot set up TLS for check-in: {exc}") from exc
    return context


@dataclass(frozen=True)
class JsonReply:
    status: int
    body: Any


class HttpClient:
    """``async with HttpClient(...) as http:`` then ``post_json``, ``fetch``, ``download``."""

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
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={"User-Agent": self._user_agent},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpdateError("HTTP client used outside 'async with'")
        return self._session

    def _headers(self, url: str) -> dict[str, str]:
        if self._token and self._token_origin == _origin(url):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    async def post_json(self, url: str, body: dict[str, Any]) -> JsonReply:
        """POST ``body``; a 2xx answer's JSON (``None`` when empty), else HttpStatusError."""
        import aiohttp

        try:
            async with self.session.post(url, json=body, headers=self._headers(url)) as response:
                if response.status >= 300:
                    raise HttpStatusError(url, response.status, response.reason or "")
                text = await response.text()
        except aiohttp.ClientError as exc:
            raise HttpTransportError(f"{_safe(url)}: {exc or type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise HttpTransportError(f"{_safe(url)}: no answer in {self._timeout_s} s") from exc
        if not text.strip():
            return JsonReply(response.status, None)
        try:
            return JsonReply(response.status, json.loads(text))
        except ValueError as exc:
            raise UpdateError(f"{_safe(url)} answered something that is not JSON") from exc

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """A small file (a signature) into memory, at most ``max_bytes``."""
        import aiohttp

        try:
            async with self.session.get(url, headers=self._headers(url)) as response:
                if response.status >= 300:
                    raise HttpStatusError(url, response.status, response.reason or "")
                data = await response.content.read(max_bytes + 1)
        except aiohttp.ClientError as exc:
            raise HttpTransportError(f"{_safe(url)}: {exc or type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise HttpTransportError(f"{_safe(url)}: no answer in {self._timeout_s} s") from exc
        if len(data) > max_bytes:
            raise UpdateError(f"{_safe(url)} is larger than {max_bytes} bytes")
        return data

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int,
        timeout_s: float,
        check_space: Callable[[int], None] | None = None,
    ) -> int:
        """Stream ``url`` into ``dest``, resuming a partial ``dest`` with a Range request.

        Returns the file's final size. ``check_space(bytes_still_to_come)`` runs (in a thread)
        before anything is written and may raise. A cut link leaves the part written so far.
        """
        import aiohttp

        offset = await asyncio.to_thread(_size, dest)
        if offset > max_bytes:
            offset = 0
        headers = self._headers(url)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=min(READ_TIMEOUT_S, timeout_s))
        try:
            async with self.session.get(url, headers=headers, timeout=timeout) as response:
                if response.status == 416 and offset:
                    await asyncio.to_thread(dest.unlink, missing_ok=True)
                    raise UpdateError(f"{_safe(url)} refused to resume; starting over next time")
                if response.status >= 300:
                    raise HttpStatusError(url, response.status, response.reason or "")
                if response.status != 206 or not _resumes_at(response, offset):
                    offset = 0  # the server sent the whole file
                remaining = response.content_length
                if remaining is not None and offset + remaining > max_bytes:
                    raise UpdateError(
                        f"artifact is {offset + remaining} bytes; the limit is {max_bytes}"
                    )
                if check_space is not None:
                    await asyncio.to_thread(check_space, remaining or 0)
                size = offset
                file = await asyncio.to_thread(_open, dest, append=offset > 0)
                try:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise UpdateError(f"artifact is larger than the limit {max_bytes}")
                        await asyncio.to_thread(file.write, chunk)
                finally:
                    await asyncio.to_thread(_close, file)
        except aiohttp.ClientError as exc:
            raise HttpTransportError(f"{_safe(url)}: {exc or type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise HttpTransportError(f"{_safe(url)}: download timed out") from exc
        return size


def _resumes_at(response: aiohttp.ClientResponse, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


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
