"""The HTTPS Provision API client: ``POST /provision/getCerts`` with a claim id, on the light
HTTP/1.1 exchange of ``gateway.core.http11`` (no aiohttp in the daemon or the CLI).

TLS is always verified (``gateway.core.tls``: the system's trust store, or the CA bundle given,
size-checked before OpenSSL reads it). The answer is read with a size cap (``MAX_ANSWER_BYTES``,
whatever Content-Length claims) and its nesting checked before it is parsed. Every failure
leaves this module as a ``ProvisioningError`` that names the URL and says what went wrong
without quoting the answer's key material.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.http11 import Response, WireError, exchange
from gateway.core.tls import client_context
from gateway.errors import ProvisioningError, TlsSetupError
from gateway.provisioning.answers import MAX_ANSWER_BYTES, AnswerError, decode_object

GETCERTS_PATH = "provision/getCerts"
_MAX_ERROR_CHARS = 200
_MAX_ERROR_BODY = 16 * 1024


def endpoint_url(base: str) -> str:
    """``base`` (the API's address, with or without the path) -> the getCerts URL."""
    base = base.rstrip("/")
    if base.endswith("/" + GETCERTS_PATH):
        return base
    return f"{base}/{GETCERTS_PATH}"


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A verifying client context (blocking: reads the CA bundle)."""
    try:
        return client_context(ca, ca_label="CA bundle")
    except TlsSetupError as exc:
        raise ProvisioningError(str(exc)) from exc


async def get_certs(
    url: str,
    claim_id: str,
    *,
    token: str | None = None,
    ca: Path | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """The API's answer for ``claim_id`` (a JSON object), or ``ProvisioningError``."""
    target = endpoint_url(url)
    context = await asyncio.to_thread(tls_context, ca)
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": "edge-gateway",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"id": claim_id}).encode()
    try:
        async with (
            asyncio.timeout(timeout_s),
            exchange(
                "POST",
                target,
                headers=headers,
                body=body,
                ssl_context=context,
                read_timeout_s=timeout_s,
            ) as response,
        ):
            status = response.status
            raw = await _read_capped(response, target)
    except TimeoutError as exc:
        raise ProvisioningError(f"{target}: no answer within {timeout_s:g} s") from exc
    except WireError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            raise ProvisioningError(
                f"{target}: the server's TLS certificate is not trusted "
                f"({exc.__cause__.verify_message})"
            ) from exc
        raise ProvisioningError(f"{target}: request failed ({exc})") from exc
    if status != 200:
        raise ProvisioningError(f"{target}: {_describe_failure(status, raw, claim_id)}")
    try:
        return await asyncio.to_thread(decode_object, raw)
    except AnswerError as exc:
        raise ProvisioningError(f"getCerts answer from {target} {exc}") from exc


async def _read_capped(response: Response, target: str) -> bytes:
    """The body, refused as soon as it (or its Content-Length) exceeds ``MAX_ANSWER_BYTES``:
    a hostile server cannot make us buffer more than that."""
    declared = response.content_length
    if declared is not None and declared > MAX_ANSWER_BYTES:
        raise ProvisioningError(
            f"getCerts answer from {target} announces {declared} bytes, "
            f"more than the {MAX_ANSWER_BYTES} an answer may have"
        )
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.read(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ProvisioningError(
                f"getCerts answer from {target} is longer than the {MAX_ANSWER_BYTES} bytes "
                "an answer may have"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _describe_failure(status: int, raw: bytes, claim_id: str) -> str:
    detail = ""
    try:
        # Only a short error body is worth parsing (on the loop: it is small).
        body = decode_object(raw) if len(raw) <= _MAX_ERROR_BODY else None
    except AnswerError:
        body = None
    if isinstance(body, Mapping):
        message = body.get("error") or body.get("message") or body.get("errorMessage")
        if isinstance(message, str):
            detail = message[:_MAX_ERROR_CHARS]
    if status == 404:
        return f"claim id {claim_id!r} is not known (HTTP 404{': ' + detail if detail else ''})"
    if status in (401, 403):
        return (
            f"not authorised (HTTP {status}): check the token file{': ' + detail if detail else ''}"
        )
    kind = "server error" if status >= 500 else "request refused"
    return f"{kind} (HTTP {status}){': ' + detail if detail else ''}"
