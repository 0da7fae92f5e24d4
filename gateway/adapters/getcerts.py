"""The HTTPS Provision API client (aiohttp): ``POST /provision/getCerts`` with a claim id.

TLS is always verified (the system's trust store, or the CA bundle given). Every failure leaves
this module as a ``ProvisioningError`` that says what went wrong without quoting the answer's
key material.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from gateway.errors import ProvisioningError

GETCERTS_PATH = "provision/getCerts"
_MAX_ERROR_CHARS = 200


def endpoint_url(base: str) -> str:
    """``base`` (the API's address, with or without the path) -> the getCerts URL."""
    base = base.rstrip("/")
    if base.endswith("/" + GETCERTS_PATH):
        return base
    return f"{base}/{GETCERTS_PATH}"


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A verifying client context (blocking: reads the CA bundle)."""
    try:
        return ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ProvisioningError(f"cannot load CA bundle {ca}: {exc}") from exc


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
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(ssl=context)
            ) as session,
            session.post(target, json={"id": claim_id}, headers=headers) as response,
        ):
            text = await response.text()
            status = response.status
    except TimeoutError as exc:
        raise ProvisioningError(f"{target}: no answer within {timeout_s:g} s") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        raise ProvisioningError(
            f"{target}: the server's TLS certificate is not trusted ({exc.certificate_error})"
        ) from exc
    except aiohttp.ClientError as exc:
        raise ProvisioningError(f"{target}: request failed ({exc})") from exc
    if status != 200:
        raise ProvisioningError(f"{target}: {_describe_failure(status, text, claim_id)}")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ProvisioningError(f"{target}: the answer is not JSON") from exc
    if not isinstance(body, dict):
        raise ProvisioningError(f"{target}: the answer is not a JSON object")
    return body


def _describe_failure(status: int, text: str, claim_id: str) -> str:
    detail = ""
    try:
        body = json.loads(text)
    except ValueError:
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
