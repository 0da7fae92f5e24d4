"""The dev cloud's HTTPS Provision API and OTA artifact hosting (aiohttp, server cert from DevCA).

- ``POST /provision/getCerts`` ``{"id": claim}`` issues a thing certificate from the dev CA for a
  known claim id: ``{accountId, certificate, key, endpoint, id, port, thing}``.
- ``POST /provision/checkin`` ``{"id", "productId", "test", "version"}`` answers the offer
  configured for the product in ``offers.json`` (``{"version", "url", "checksum"}``, and
  ``"signature"``, ``"manifest"``, ``"manifestSignature"`` when given), or ``{}``. With
  ``ProvisionService.signing_key`` set, offers of local artifacts carry a manifest signed with
  it (as a release process would), e.g. ``{"gw": {"version": "2.0", "url": "/artifacts/x"}}``.
- ``GET /artifacts/<name>`` serves files of ``artifacts/`` with HTTP Range support.
- ``POST /provision/getCreds`` answers as Ioto's does, ``{accessKeyId, secretAccessKey,
  sessionToken, expires, region}``: made-up temporary credentials (nothing in AWS accepts them)
  valid for ``ProvisionService.creds_lifetime_s``, so the credentials flow runs by hand; with
  ``creds_token`` set, only to ``Authorization: Bearer <creds_token>``.

``ProvisionService.misbehaviour`` injects faults for tests: error statuses, slow check-ins,
truncated artifact bodies, wrong checksums and corrupted signatures.

State lives in one directory: ``claims.json`` (claim id -> thing name), ``offers.json``
(product id -> offer, optionally with a ``"test"`` offer for test devices), ``issued.json`` (the
certificates issued) and ``issued/<thing>/`` (cert, key, CA).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import ssl
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web

from gateway.core import tls
from gateway.core.atomicfile import write_atomic
from gateway.devcloud.pki import Credentials, DevCA, DevCloudError, read_json_object
from gateway.errors import TlsSetupError

__all__ = ["ProvisionError", "ProvisionService", "provision_app", "server_ssl_context"]

CLAIMS_FILE: Final = "claims.json"
OFFERS_FILE: Final = "offers.json"
ISSUED_FILE: Final = "issued.json"
ARTIFACTS_DIR: Final = "artifacts"
ACCOUNT_ID: Final = "devcloud"
_MAX_BODY: Final = 64 * 1024

log = structlog.get_logger()

# Called with (thing, kind, details) for the dashboard: kind is "checkin" or "certificate".
ProvisionListener = Callable[[str, str, dict[str, Any]], None]


class ProvisionError(DevCloudError):
    """A provisioning state file is unreadable or malformed."""


@dataclass
class Misbehaviour:
    """Faults the Provision API injects on request (for tests of the update client)."""

    checkin_status: int | None = None  # answer every check-in with this status (500, 401, ...)
    checkin_delay_s: float = 0.0  # answer check-ins this late (slow server)
    artifact_status: int | None = None  # answer artifact downloads with this status
    truncate_at: int | None = None  # cut artifact bodies after this many bytes ...
    truncate_times: int = 1  # ... this many times, then serve them whole
    wrong_checksum: bool = False  # offers carry a wrong SHA-256
    bad_signature: bool = False  # .sig files and signature fields are corrupted
    # Hostile servers (tests/hostile/test_updates.py):
    checkin_body: bytes | None = None  # answer check-ins 200 with these raw bytes
    checkin_stream_bytes: int = 0  # ... or with this many bytes of JSON, no Content-Length
    checkin_redirect: str | None = None  # answer check-ins 307 to this URL
    artifact_redirect: str | None = None  # answer artifact downloads 302 to this URL
    artifact_chunked: bool = False  # stream artifacts without Content-Length
    getcreds_status: int | None = None  # answer getCreds with this status


def server_ssl_context(credentials: Credentials) -> ssl.SSLContext:
    """A TLS >= 1.2 server context for a DevCA server certificate (blocking)."""
    try:
        return tls.server_context(credentials.cert, credentials.key)
    except TlsSetupError as exc:
        raise ProvisionError(str(exc)) from exc


def _corrupt_signature(data: bytes) -> bytes:
    """A signature of the right shape that verifies nothing: one bit flipped."""
    try:
        raw = bytearray(base64.b64decode(data.strip(), validate=True))
    except ValueError:
        raw = bytearray(data)
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)) + b"\n"


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


class ProvisionService:
    """Claims, offers and issued certificates of the dev cloud (files under ``state_dir``)."""

    def __init__(
        self,
        state_dir: Path,
        ca: DevCA,
        *,
        endpoint: str,
        port: int,
        claims: Mapping[str, str] | None = None,
        listener: ProvisionListener | None = None,
    ) -> None:
        self._dir = state_dir
        self._ca = ca
        self.endpoint = endpoint
        self.port = port
        self._extra_claims = dict(claims or {})
        self._listener = listener
        self.checkins: dict[str, dict[str, Any]] = {}
        self.checkin_count = 0
        self.misbehaviour = Misbehaviour()
        self.signing_key: bytes | None = None  # PEM: sign the manifests of local artifacts
        self.artifact_requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self.streamed_answers: list[int] = []  # bytes sent per streamed check-in answer
        # getCreds: the bearer token required (None: any caller), lifetime, region, key ids.
        self.creds_token: str | None = None
        self.creds_lifetime_s = 3600.0
        self.creds_region = "us-east-1"
        self.creds_issued: list[str] = []

    @property
    def artifacts_dir(self) -> Path:
        return self._dir / ARTIFACTS_DIR

    def prepare(self) -> None:
        """Create the state directory and write the claims given on the command line (blocking)."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self._extra_claims:
            claims = {
                **read_json_object(self._dir / CLAIMS_FILE, ProvisionError),
                **self._extra_claims,
            }
            write_atomic(self._dir / CLAIMS_FILE, json.dumps(claims, indent=2).encode(), 0o600)
        if not (self._dir / OFFERS_FILE).exists():
            write_atomic(self._dir / OFFERS_FILE, b"{}\n", 0o644)

    def claims(self) -> dict[str, str]:
        """Claim id -> thing name (blocking: reads ``claims.json``)."""
        return {
            str(k): str(v)
            for k, v in read_json_object(self._dir / CLAIMS_FILE, ProvisionError).items()
        }

    def issue_for_claim(self, claim: str) -> dict[str, Any] | None:
        """The getCerts answer for ``claim``, or None for an unknown claim (blocking)."""
        thing = self.claims().get(claim)
        if thing is None:
            return None
        if not _valid_name(thing):
            raise ProvisionError(f"claim {claim!r} names an invalid thing {thing!r}")
        creds = self._ca.issue(thing, self._dir / "issued" / thing)
        issued = read_json_object(self._dir / ISSUED_FILE, ProvisionError)
        issued.setdefault(thing, []).append({"claim": claim, "at": int(time.time())})
        write_atomic(self._dir / ISSUED_FILE, json.dumps(issued, indent=2).encode(), 0o600)
        return {
            "accountId": ACCOUNT_ID,
            "certificate": creds.cert.read_text(),
            "key": creds.key.read_text(),
            "endpoint": self.endpoint,
            "id": claim,
            "port": self.port,
            "thing": thing,
        }

    def offer_for(self, product: str, test: bool) -> dict[str, Any]:
        """The configured offer of ``product`` (its ``test`` offer for test devices) (blocking)."""
        entry = read_json_object(self._dir / OFFERS_FILE, ProvisionError).get(product)
        if not isinstance(entry, dict):
            return {}
        test_offer = entry.get("test")
        chosen = test_offer if test and isinstance(test_offer, dict) else entry
        fields = ("version", "url", "checksum", "signature", "manifest", "manifestSignature")
        offer = {k: chosen[k] for k in fields if k in chosen}
        if "version" not in offer or "url" not in offer:
            return {}
        url = str(offer["url"])
        prefix = f"/{ARTIFACTS_DIR}/"
        name = url[len(prefix) :]
        path = self.artifacts_dir / name
        if url.startswith(prefix) and _valid_name(name) and path.is_file():
            data = path.read_bytes()
            offer.setdefault("checksum", hashlib.sha256(data).hexdigest())
            if self.signing_key is not None and "manifest" not in offer:
                offer.update(self._signed_manifest(product, chosen, data))
        if self.misbehaviour.wrong_checksum and "checksum" in offer:
            offer["checksum"] = hashlib.sha256(b"not the artifact").hexdigest()
        for field in ("signature", "manifestSignature"):
            if self.misbehaviour.bad_signature and field in offer:
                offer[field] = _corrupt_signature(str(offer[field]).encode()).decode()
        return offer

    def _signed_manifest(
        self, product: str, offer: Mapping[str, Any], data: bytes
    ) -> dict[str, str]:
        """``manifest`` and ``manifestSignature`` for an artifact, signed with ``signing_key``."""
        from gateway.updates.checkin import Manifest
        from gateway.updates.signing import sign_manifest

        assert self.signing_key is not None
        manifest = Manifest(
            product=product,
            version=str(offer["version"]),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            min_version=offer.get("min_version"),
            downgrade=offer.get("downgrade") is True,
        ).dumps()
        signature = sign_manifest(self.signing_key, manifest)
        return {"manifest": manifest.decode(), "manifestSignature": signature.decode().strip()}

    def issue_credentials(self) -> dict[str, Any]:
        """A getCreds answer: random credentials of AWS's shapes (a session's ASIA key id)."""
        alphabet = string.ascii_uppercase + string.digits
        key_id = "ASIA" + "".join(secrets.choice(alphabet) for _ in range(16))
        expires = time.time() + self.creds_lifetime_s
        self.creds_issued.append(key_id)
        return {
            "accessKeyId": key_id,
            "secretAccessKey": secrets.token_urlsafe(30)[:40],
            "sessionToken": base64.b64encode(secrets.token_bytes(96)).decode(),
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
            "region": self.creds_region,
        }

    def notify(self, thing: str, kind: str, details: dict[str, Any]) -> None:
        if self._listener is not None:
            self._listener(thing, kind, details)


_SERVICE_KEY: Final = web.AppKey("provision_service", ProvisionService)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=request.content_length)
    try:
        body = await request.json()
    except ValueError as exc:
        raise _bad_request("body must be JSON") from exc
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def _get_certs(request: web.Request) -> web.Response:
    service = request.app[_SERVICE_KEY]
    body = await _json_body(request)
    claim = body.get("id")
    if not isinstance(claim, str) or not claim:
        raise _bad_request("'id' (the claim id) must be a non-empty string")
    answer = await asyncio.to_thread(service.issue_for_claim, claim)
    if answer is None:
        log.warning("provision_claim_unknown", claim=claim)
        return web.json_response({"error": f"unknown claim id {claim!r}"}, status=404)
    log.info("provision_certificate_issued", claim=claim, thing=answer["thing"])
    service.notify(answer["thing"], "certificate", {"claim": claim})
    return web.json_response(answer)


async def _checkin(request: web.Request) -> web.StreamResponse:
    service = request.app[_SERVICE_KEY]
    body = await _json_body(request)
    thing, product, version = body.get("id"), body.get("productId"), body.get("version")
    test = body.get("test", False)
    service.checkin_count += 1
    faults = service.misbehaviour
    if faults.checkin_delay_s:
        await asyncio.sleep(faults.checkin_delay_s)
    if faults.checkin_status is not None:
        log.warning("provision_checkin_misbehaving", status=faults.checkin_status)
        return web.json_response({"error": "injected fault"}, status=faults.checkin_status)
    if (hostile := await _hostile_checkin(request, service)) is not None:
        return hostile
    if not isinstance(thing, str) or not thing:
        raise _bad_request("'id' must be a non-empty string")
    if not isinstance(product, str) or not product:
        raise _bad_request("'productId' must be a non-empty string")
    if not isinstance(test, bool):
        raise _bad_request("'test' must be true or false")
    offer = await asyncio.to_thread(service.offer_for, product, test)
    url = offer.get("url")
    if isinstance(url, str) and url.startswith("/"):
        offer["url"] = f"{request.scheme}://{request.host}{url}"
    record = {
        "at": time.time(),
        "productId": product,
        "version": version,
        "test": test,
        "offer": offer,
    }
    service.checkins[thing] = record
    log.info("provision_checkin", thing=thing, product=product, version=version, offered=offer)
    service.notify(thing, "checkin", record)
    return web.json_response(offer)


async def _get_creds(request: web.Request) -> web.Response:
    service = request.app[_SERVICE_KEY]
    status = service.misbehaviour.getcreds_status
    if status is not None:
        return web.json_response({"error": "injected fault"}, status=status)
    if service.creds_token is not None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), service.creds_token.encode()
        ):
            log.warning("provision_getcreds_unauthorized")
            return web.json_response({"error": "unauthorized"}, status=401)
    answer = service.issue_credentials()
    log.info("provision_credentials_issued", lifetime_s=service.creds_lifetime_s)
    return web.json_response(answer)


async def _hostile_checkin(
    request: web.Request, service: ProvisionService
) -> web.StreamResponse | None:
    """The check-in answer of a hostile server, when one is asked for (else None)."""
    faults = service.misbehaviour
    if faults.checkin_redirect is not None:
        raise web.HTTPTemporaryRedirect(faults.checkin_redirect)
    if faults.checkin_body is not None:
        return web.Response(body=faults.checkin_body, content_type="application/json")
    if faults.checkin_stream_bytes <= 0:
        return None
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    padding = b"a" * 65_536
    sent = 0
    try:
        await response.write(b'{"version": "')
        while sent < faults.checkin_stream_bytes:
            await response.write(padding)
            sent += len(padding)
        await response.write(b'"}')
        await response.write_eof()
    except (ConnectionError, RuntimeError):  # the client hung up: what a capped reader does
        log.info("provision_checkin_stream_ended", sent=sent)
    finally:
        service.streamed_answers.append(sent)
    return response


async def _chunked(request: web.Request, path: Path) -> web.StreamResponse:
    """The whole file without Content-Length (chunked), as a hostile or lazy server sends it."""
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    await response.prepare(request)
    data = await asyncio.to_thread(path.read_bytes)
    try:
        for start in range(0, len(data), 65_536):
            await response.write(data[start : start + 65_536])
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        log.info("provision_artifact_stream_ended", name=path.name)
    return response


async def _artifact(request: web.Request) -> web.StreamResponse:
    service = request.app[_SERVICE_KEY]
    name = request.match_info["name"]
    path = service.artifacts_dir / name
    if not _valid_name(name) or not path.is_file():
        raise web.HTTPNotFound(text=f"no artifact {name!r}")
    service.artifact_requests.append((name, request.headers.get("Range")))
    faults = service.misbehaviour
    if faults.artifact_status is not None:
        return web.json_response({"error": "injected fault"}, status=faults.artifact_status)
    if faults.artifact_redirect is not None:
        raise web.HTTPFound(faults.artifact_redirect)
    if name.endswith(".sig") and faults.bad_signature:
        return web.Response(body=_corrupt_signature(await asyncio.to_thread(path.read_bytes)))
    if faults.truncate_at is not None and faults.truncate_times > 0:
        faults.truncate_times -= 1
        return await _truncated(request, path, faults.truncate_at)
    if faults.artifact_chunked:
        return await _chunked(request, path)
    return web.FileResponse(path)  # serves Range requests with 206 Partial Content


async def _truncated(request: web.Request, path: Path, cut_at: int) -> web.StreamResponse:
    """Promise the whole file, send ``cut_at`` bytes, then drop the connection."""
    data = await asyncio.to_thread(path.read_bytes)
    response = web.StreamResponse()
    response.content_length = len(data)
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    await response.write(data[:cut_at])
    await asyncio.sleep(0.2)  # the client reads what arrived before the link goes
    log.warning("provision_artifact_truncated", name=path.name, sent=cut_at, size=len(data))
    if request.transport is not None:
        request.transport.abort()
    return response


def provision_app(service: ProvisionService) -> web.Application:
    """The Provision API and artifact hosting; serve it over HTTPS (``server_ssl_context``)."""
    app = web.Application(client_max_size=_MAX_BODY)
    app[_SERVICE_KEY] = service
    app.router.add_post("/provision/getCerts", _get_certs)
    app.router.add_post("/provision/checkin", _checkin)
    app.router.add_post("/provision/getCreds", _get_creds)
    app.router.add_get("/artifacts/{name}", _artifact)
    return app
