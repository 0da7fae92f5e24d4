"""The dev cloud's AWS IoT fleet provisioning responder (JSON), on the dev broker.

- ``$aws/certificates/create-from-csr/json`` ``{"certificateSigningRequest"}``: the CSR is
  signed by the dev CA; the certificate's CN is a fresh certificate identity (as on AWS, the
  certificate is not the thing). Answers ``{certificateId, certificatePem,
  certificateOwnershipToken}`` on ``.../accepted``, or ``{statusCode, errorCode, errorMessage}``
  on ``.../rejected``.
- ``$aws/provisioning-templates/<name>/provision/json`` ``{"certificateOwnershipToken",
  "parameters"}``: the template (``templates.json``: ``{"<name>": {"thingName":
  "pi-{SerialNumber}"}}``) turns the parameters into a thing name; the certificate identity is
  attached to that thing in the broker's ACL, then ``{deviceConfiguration, thingName}``.

mosquitto cannot answer one client only the way AWS does: replies reach every client
subscribed to the reply topic, so only claim (and attached) identities may subscribe to them and
the gateway accepts only a certificate for its own key. Ownership tokens expire after an hour.
State (claim identities, attachments) persists in ``fleet.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import aiomqtt
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.core.atomicfile import write_atomic
from gateway.devcloud.broker import MosquittoBroker
from gateway.devcloud.pki import (
    Credentials,
    DevCA,
    DevCloudError,
    client_ssl_context,
    read_json_object,
)
from gateway.devcloud.provision import ProvisionListener

__all__ = ["CREATE_TOPIC", "FleetResponder"]

CREATE_TOPIC: Final = "$aws/certificates/create-from-csr/json"
_REGISTER_FILTER: Final = "$aws/provisioning-templates/+/provision/json"
_REGISTER_TOPIC: Final = re.compile(r"^\$aws/provisioning-templates/([^/]+)/provision/json$")
TEMPLATES_FILE: Final = "templates.json"
STATE_FILE: Final = "fleet.json"
TOKEN_LIFETIME_S: Final = 3600.0
_THING_NAME: Final = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")

log = structlog.get_logger()


def _rejection(status: int, code: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "errorCode": code, "errorMessage": message}


class FleetResponder:
    """Answers the two fleet-provisioning requests (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        broker: MosquittoBroker,
        ca: DevCA,
        *,
        templates: Mapping[str, str] | None = None,
        cert_days: float = 365,
        listener: ProvisionListener | None = None,
    ) -> None:
        self._dir = state_dir
        self._broker = broker
        self._ca = ca
        self._extra_templates = dict(templates or {})
        self.cert_days = cert_days  # validity of the certificates it signs (tests shorten it)
        self._listener = listener
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (cert identity, expiry)
        self._claims: list[str] = []
        self._attached: dict[str, str] = {}
        self.registrations: list[dict[str, Any]] = []
        # Fields laid over every RegisterThing answer: tests play a misbehaving cloud with it
        # (e.g. {"thingName": "a/b"}); the broker's ACL still gets the template's real name.
        self.register_answer_overrides: dict[str, Any] = {}

    # -- state (blocking) ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Load claims and attachments, write the templates given, apply the ACL (blocking)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._extra_templates:
            templates = {
                **read_json_object(self._dir / TEMPLATES_FILE),
                **{name: {"thingName": pattern} for name, pattern in self._extra_templates.items()},
            }
            write_atomic(
                self._dir / TEMPLATES_FILE, json.dumps(templates, indent=2).encode(), 0o644
            )
        state = read_json_object(self._dir / STATE_FILE)
        self._claims = [str(c) for c in state.get("claims", [])]
        self._attached = {str(k): str(v) for k, v in dict(state.get("attached", {})).items()}
        self._apply()

    def _apply(self) -> None:
        self._broker.set_fleet_identities(claims=self._claims, attached=self._attached)
        state = {"claims": self._claims, "attached": self._attached}
        write_atomic(self._dir / STATE_FILE, json.dumps(state, indent=2).encode(), 0o600)

    def issue_claim(self, name: str, directory: Path) -> Credentials:
        """A claim certificate (CN ``name``) that may only use the provisioning topics."""
        credentials = self._ca.issue(name, directory)
        if name not in self._claims:
            self._claims.append(name)
            self._apply()
        return credentials

    def templates(self) -> dict[str, str]:
        result = {}
        for name, spec in read_json_object(self._dir / TEMPLATES_FILE).items():
            if isinstance(spec, dict) and isinstance(spec.get("thingName"), str):
                result[str(name)] = spec["thingName"]
        return result

    def attached(self) -> dict[str, str]:
        return dict(self._attached)

    # -- requests --------------------------------------------------------------------------------

    def create_from_csr(self, body: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(accepted, answer) for a CreateCertificateFromCsr request (blocking: signs)."""
        csr = body.get("certificateSigningRequest")
        if not isinstance(csr, str) or not csr:
            return False, _rejection(400, "InvalidPayload", "certificateSigningRequest missing")
        identity = f"cert-{secrets.token_hex(8)}"
        try:
            pem = self._ca.sign_csr(csr.encode(), identity, days=self.cert_days)
        except DevCloudError as exc:
            return False, _rejection(400, "InvalidCSR", str(exc))
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
        self._tokens[token] = (identity, now + TOKEN_LIFETIME_S)
        return True, {
            "certificateId": hashlib.sha256(der).hexdigest(),
            "certificatePem": pem.decode(),
            "certificateOwnershipToken": token,
        }

    def register_thing(self, template: str, body: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(accepted, answer) for a RegisterThing request (blocking: reloads the broker ACL)."""
        pattern = self.templates().get(template)
        if pattern is None:
            return False, _rejection(404, "ResourceNotFound", f"no template {template!r}")
        token = body.get("certificateOwnershipToken")
        entry = self._tokens.get(token) if isinstance(token, str) else None
        if entry is None or entry[1] < time.time():
            return False, _rejection(400, "InvalidCertificateOwnershipToken", "unknown or expired")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            return False, _rejection(400, "InvalidParameters", "parameters must be an object")
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f]
        missing = [f for f in fields if not isinstance(parameters.get(f), str)]
        if missing:
            return False, _rejection(
                400, "InvalidParameters", f"template {template!r} needs parameters {missing}"
            )
        thing = pattern.format(**{f: parameters[f] for f in fields})
        if not _THING_NAME.match(thing):
            return False, _rejection(400, "InvalidParameters", f"invalid thing name {thing!r}")
        identity = entry[0]
        del self._tokens[str(token)]
        self._attached[identity] = thing
        self._apply()
        record = {"thing": thing, "template": template, "identity": identity, "at": time.time()}
        self.registrations.append(record)
        return True, {
            "deviceConfiguration": {},
            "thingName": thing,
            **self.register_answer_overrides,
        }

    # -- MQTT ------------------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Answer requests until cancelled (reconnecting if the broker restarts)."""
        credentials = self._broker.credentials(self._broker.service_identity)
        tls = await asyncio.to_thread(client_ssl_context, credentials)
        while True:
            try:
                async with aiomqtt.Client(
                    self._broker.host,
                    self._broker.port,
                    identifier=f"devcloud-fleet-{secrets.token_hex(4)}",
                    protocol=aiomqtt.ProtocolVersion.V311,
                    tls_context=tls,
                    clean_session=True,
                ) as client:
                    await client.subscribe([(CREATE_TOPIC, 1), (_REGISTER_FILTER, 1)])
                    if ready is not None:
                        ready.set()
                    async for message in client.messages:
                        await self._handle(client, message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("fleet_responder_disconnected", error=str(exc))
                await asyncio.sleep(0.5)

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        try:
            body = json.loads(payload if isinstance(payload, bytes | bytearray | str) else b"")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await self._reply(client, topic, False, _rejection(400, "InvalidPayload", "not JSON"))
            return
        if topic == CREATE_TOPIC:
            accepted, answer = await asyncio.to_thread(self.create_from_csr, body)
            log.info("fleet_create_from_csr", accepted=accepted)
        elif match := _REGISTER_TOPIC.match(topic):
            template = match.group(1)
            accepted, answer = await asyncio.to_thread(self.register_thing, template, body)
            log.info("fleet_register_thing", template=template, accepted=accepted)
            if accepted and self._listener is not None:
                thing = self.registrations[-1]["thing"]  # the real name, whatever was answered
                self._listener(thing, "certificate", {"template": template})
        else:
            return
        await self._reply(client, topic, accepted, answer)

    async def _reply(
        self, client: aiomqtt.Client, topic: str, accepted: bool, answer: dict[str, Any]
    ) -> None:
        suffix = "accepted" if accepted else "rejected"
        await client.publish(f"{topic}/{suffix}", json.dumps(answer).encode(), qos=1)
