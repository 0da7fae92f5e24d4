"""An auto-generated agent certificate from Insights Hub, over HTTPS (the CLI's
``edge-gateway mindconnect agent-cert``; never loaded by the daemon).

1. A token: from a file, or from the technical token manager
   ``POST {gateway}/api/technicaltokenmanager/v3/oauth/token`` with ``X-SPACE-AUTH-KEY`` and
   ``{"grant_type": "client_credentials", "appName", "appVersion", "hostTenant",
   "userTenant"}``. The header's scheme differs between Siemens' sources: the technical token
   manager's API reference (and this project's issue) say ``Bearer base64(appId:appSecret)``,
   its "Samples" page says ``Basic``; ``Bearer`` is sent (``--auth-scheme`` picks the other).
2. ``POST {gateway}/api/mindconnectmqtt/v3/agentCertificates`` with ``{"name"}`` and
   ``Authorization: Bearer <token>``. The answer's shape differs between Siemens' sources,
   and both are accepted:

   - the how-to "Obtaining Auto-Generated Agent Certificate": ``{"clientId", "privateKey",
     "publicKey"}``, the certificate PEM under ``publicKey``;
   - Siemens' MindConnect MQTT sample application (its ``submit_generate_agent_certificate``):
     ``{"clientId", "credentials": {"certificatePem", "privateKey"}}``, PEM that may carry
     ``\\n`` escaped once more.

The private key is held in memory only until the caller writes it (0600); it is never logged
or shown (``repr`` leaves it out).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from gateway.errors import ProvisioningError
from gateway.updates.http import HttpClient

TOKEN_PATH = "/api/technicaltokenmanager/v3/oauth/token"
AGENT_CERTIFICATES_PATH = "/api/mindconnectmqtt/v3/agentCertificates"
MAX_ANSWER_BYTES = 256 * 1024
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


class AgentCertError(ProvisioningError):
    """The token or the agent certificate could not be obtained."""


@dataclass(frozen=True)
class AppCredential:
    app_id: str
    app_secret: str
    app_name: str
    app_version: str
    tenant: str

    def __repr__(self) -> str:  # never show the secret
        return f"AppCredential(app_id={self.app_id!r}, tenant={self.tenant!r})"


@dataclass(frozen=True)
class AgentCertificate:
    client_id: str | None
    cert_pem: bytes
    key_pem: bytes
    shape: str  # which documented shape the answer had

    def __repr__(self) -> str:  # never show the key, even in a traceback's locals
        return f"AgentCertificate(client_id={self.client_id!r}, shape={self.shape!r})"


def _pem(value: object) -> bytes | None:
    if not isinstance(value, str) or "-----BEGIN" not in value:
        return None
    text = value.replace("\\n", "\n") if "\n" not in value else value
    return text.strip().encode() + b"\n"


def parse_agent_certificate(answer: object) -> AgentCertificate:
    """The certificate, key and client id of an ``agentCertificates`` answer, in either shape
    (see the module docstring); ``AgentCertError`` saying what is missing (never a value)."""
    if not isinstance(answer, dict):
        raise AgentCertError("the agentCertificates answer is not a JSON object")
    client_id = answer.get("clientId")
    if not isinstance(client_id, str) or not client_id:
        client_id = None
    credentials = answer.get("credentials")
    if isinstance(credentials, dict):  # the sample application's shape
        cert, key, shape = (
            credentials.get("certificatePem"),
            credentials.get("privateKey"),
            ("credentials.certificatePem/privateKey"),
        )
    else:  # the how-to's shape
        cert, key, shape = (
            answer.get("publicKey"),
            answer.get("privateKey"),
            ("publicKey/privateKey"),
        )
    cert_pem, key_pem = _pem(cert), _pem(key)
    if cert_pem is None or _PEM_CERT.encode() not in cert_pem:
        raise AgentCertError(
            "the agentCertificates answer has no PEM certificate (expected 'publicKey' or "
            "'credentials.certificatePem')"
        )
    if key_pem is None or b"PRIVATE KEY" not in key_pem:
        raise AgentCertError(
            "the agentCertificates answer has no PEM private key (expected 'privateKey' or "
            "'credentials.privateKey')"
        )
    return AgentCertificate(client_id, cert_pem, key_pem, shape)


def space_auth_key(app_id: str, app_secret: str, scheme: str = "Bearer") -> str:
    raw = f"{app_id}:{app_secret}".encode()
    return f"{scheme} {base64.b64encode(raw).decode('ascii')}"


def _answer_json(body: bytes, what: str) -> Any:
    if len(body) > MAX_ANSWER_BYTES:
        raise AgentCertError(f"{what} is larger than {MAX_ANSWER_BYTES} bytes")
    from gateway.core.jsonlimits import nests_deeper_than

    if nests_deeper_than(body, 8):
        raise AgentCertError(f"{what} is nested too deeply")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise AgentCertError(f"{what} is not JSON") from exc


def _refusal(status: int, body: bytes) -> str:
    """A short reason from an error answer (its ``message`` if it has one), never secrets."""
    try:
        data = json.loads(body[:4096])
    except (ValueError, RecursionError):
        return f"HTTP {status}"
    message = data.get("message") if isinstance(data, dict) else None
    return f"HTTP {status}: {message[:200]}" if isinstance(message, str) else f"HTTP {status}"


async def fetch_token(
    http: HttpClient, gateway_url: str, app: AppCredential, *, scheme: str = "Bearer"
) -> str:
    """A technical token for ``app`` (host and user tenant: ``app.tenant``)."""
    reply = await http.request(
        "POST",
        gateway_url.rstrip("/") + TOKEN_PATH,
        headers={"X-SPACE-AUTH-KEY": space_auth_key(app.app_id, app.app_secret, scheme)},
        json_body={
            "grant_type": "client_credentials",
            "appName": app.app_name,
            "appVersion": app.app_version,
            "hostTenant": app.tenant,
            "userTenant": app.tenant,
        },
        max_bytes=MAX_ANSWER_BYTES,
        raise_for_status=False,
    )
    if reply.status != 200:
        raise AgentCertError(f"the token manager refused: {_refusal(reply.status, reply.body)}")
    data = _answer_json(reply.body, "the token answer")
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise AgentCertError("the token answer has no 'access_token'")
    return token


async def create_agent_certificate(
    http: HttpClient, gateway_url: str, token: str, name: str
) -> AgentCertificate:
    reply = await http.request(
        "POST",
        gateway_url.rstrip("/") + AGENT_CERTIFICATES_PATH,
        headers={"Authorization": f"Bearer {token}"},
        json_body={"name": name},
        max_bytes=MAX_ANSWER_BYTES,
        raise_for_status=False,
    )
    if reply.status not in (200, 201):
        raise AgentCertError(f"agentCertificates refused: {_refusal(reply.status, reply.body)}")
    return parse_agent_certificate(_answer_json(reply.body, "the agentCertificates answer"))
