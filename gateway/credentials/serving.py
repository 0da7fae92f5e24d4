"""The loopback endpoint AWS SDKs read through ``AWS_CONTAINER_CREDENTIALS_FULL_URI``.

As Greengrass's token exchange service does: a local HTTP server on a loopback address answers
``GET /2016-11-01/credentialprovider/`` with ``{AccessKeyId, SecretAccessKey, Token,
Expiration}`` (the container credential provider's format), and only to a request whose
``Authorization`` header is the token of the token file (which programs name in
``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``). Anything else is refused: no or a wrong token
(401/403), another path (404) or method (405), a request that is too long (431) or too slow; and
with no valid credentials the answer is 503 with the provider format's ``code``/``message``.

Plain ``asyncio.start_server`` with a bounded request reader: no HTTP library in the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.config.formats import is_loopback_host
from gateway.core.atomicfile import write_atomic
from gateway.core.credfiles import CredentialFileError, read_credential_file
from gateway.credentials.model import AwsCredentials, CredentialsError

log = structlog.get_logger()

CREDENTIALS_PATH = "/2016-11-01/credentialprovider/"  # Greengrass's token exchange service's
TOKEN_FILE = "aws-credentials.token"
TOKEN_MODE = 0o640  # the service's group may hand it to the programs it runs
MAX_REQUEST_BYTES = 8 * 1024
READ_TIMEOUT_S = 5.0
MAX_CLIENTS = 16  # waiting for their request at once
LOG_EVERY_S = 60.0
_REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def load_or_create_token(path: Path) -> str:
    """The token of ``path``; a new random one (0640) when the file does not exist (blocking)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # No line break: SDKs send the file's bytes verbatim (botocore refuses a "\n").
        write_atomic(path, secrets.token_urlsafe(32).encode(), TOKEN_MODE)
    try:
        token = read_credential_file(path, "credentials token file").decode()
    except (CredentialFileError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read the credentials token file {path}: {exc}") from exc
    if token.endswith(("\n", "\r")):
        raise CredentialsError(
            f"the credentials token file {path} ends with a line break, which SDKs send as "
            "part of the token (and botocore refuses): write it without one (printf '%s')"
        )
    if len(token) < 16 or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise CredentialsError(
            f"the credentials token file {path} must hold one token of 16 or more "
            "printable characters"
        )
    return token


class CredentialsServer:
    """Answers credential requests with ``current()`` to holders of ``token``."""

    def __init__(self, token: str, current: Callable[[], AwsCredentials | None]) -> None:
        self._token = token.encode()
        self._current = current
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # in arrival order
        self.served = 0
        self.refused = 0
        self._logged_at = float("-inf")
        self.port: int | None = None

    async def serve(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        """Listen on ``host:port`` (loopback only) until cancelled."""
        if not is_loopback_host(host):
            raise CredentialsError(f"refusing to serve credentials on {host}: not loopback")
        server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        self.port = server.sockets[0].getsockname()[1]
        log.info("credentials_http_listening", host=host, port=self.port, path=CREDENTIALS_PATH)
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # At most MAX_CLIENTS wait for their request: a newcomer replaces the one that has
        # waited longest (as the admin socket does), so idle connections cannot lock out a
        # program that sends its request at once.
        if len(self._waiting) >= MAX_CLIENTS:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
            self._refused(408)
        self._waiting[writer] = None
        try:
            try:
                status, body = await self._answer(reader)
            finally:
                self._waiting.pop(writer, None)
            if status != 200:
                self._refused(status)
            await self._reply(writer, status, body)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(READ_TIMEOUT_S):
                    await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, _error("RequestTimeout", "no complete request in time")
        except asyncio.LimitOverrunError:
            return 431, _error("RequestTooLarge", "request head too large")
        except asyncio.IncompleteReadError:
            return 408, _error("RequestTimeout", "the request ended early")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return 405, _error("BadRequest", "not an HTTP request")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if target.split("?", 1)[0] != CREDENTIALS_PATH:
            return 404, _error("NotFound", f"credentials are served at {CREDENTIALS_PATH}")
        if method != "GET":
            return 405, _error("MethodNotAllowed", "only GET")
        given = headers.get("authorization")
        if not given:
            return 401, _error("Unauthorized", "an Authorization header is required")
        if not hmac.compare_digest(given.encode("latin-1"), self._token):
            return 403, _error("Forbidden", "the authorization token is not valid")
        creds = self._current()
        if creds is None:
            return 503, _error("CredentialsUnavailable", "no valid credentials at the moment")
        self.served += 1
        return 200, creds.container()

    async def _reply(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        async with asyncio.timeout(READ_TIMEOUT_S):
            await writer.drain()

    def _refused(self, status: int) -> None:
        """One line for the first refusal, then at most one a minute (a flood of bad requests
        must not flood the log)."""
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("credentials_http_refused", status=status, refused_total=self.refused)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}
