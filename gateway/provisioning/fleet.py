"""AWS IoT fleet provisioning by claim over MQTT (JSON payloads), on the ``MqttSession`` port.

1. ``$aws/certificates/create-from-csr/json`` ``{"certificateSigningRequest": PEM}`` ->
   ``.../accepted`` ``{certificateId, certificatePem, certificateOwnershipToken}`` or
   ``.../rejected`` ``{statusCode, errorCode, errorMessage}``;
2. ``$aws/provisioning-templates/<template>/provision/json``
   ``{"certificateOwnershipToken", "parameters"}`` -> ``.../accepted``
   ``{deviceConfiguration, thingName}`` or ``.../rejected``.

The reply topics are subscribed before each request is published. Only a certificate for our
own public key is accepted (a shared broker could carry another device's answer). The private
key never leaves the caller: only the CSR is sent. Replies are size- and depth-checked before
they are parsed, and the thing name RegisterThing assigns must be one AWS IoT allows, before
anything is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.core.ports import InboundMessage, MqttSession
from gateway.errors import GatewayError, ProvisioningError
from gateway.provisioning import answers

log = structlog.get_logger()

CREATE_FROM_CSR = "$aws/certificates/create-from-csr/json"
# AWS's certificate ids are 64 hex digits; anything else is not logged or kept.
_CERTIFICATE_ID = re.compile(r"[0-9A-Za-z]{1,128}")


def provision_topic(template: str) -> str:
    return f"$aws/provisioning-templates/{template}/provision/json"


@dataclass(frozen=True)
class CreatedCertificate:
    certificate_id: str
    certificate_pem: str
    ownership_token: str


@dataclass(frozen=True)
class Registration:
    thing_name: str
    device_configuration: dict[str, Any]


class FleetRejectedError(ProvisioningError):
    def __init__(self, step: str, reply: Mapping[str, Any]) -> None:
        self.status_code = reply.get("statusCode")
        self.error_code = reply.get("errorCode")
        message = str(reply.get("errorMessage", ""))[:300]
        status, code = (answers.shown(v).strip("'") for v in (self.status_code, self.error_code))
        super().__init__(f"{step} rejected: {status} {code}" + (f": {message}" if message else ""))


async def _decode(message: InboundMessage) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(answers.decode_object, message.payload)
    except answers.AnswerError as exc:
        raise ProvisioningError(f"the answer on {message.topic} {exc}") from exc


def _text(body: Mapping[str, Any], key: str, topic: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ProvisioningError(f"{topic}: the answer has no {key!r}")
    return value


class FleetClient:
    """Runs the two requests over one open session (the claim's, or the thing's for renewal)."""

    def __init__(self, session: MqttSession, *, timeout_s: float) -> None:
        self._session = session
        self._timeout_s = timeout_s
        self._messages: AsyncIterator[InboundMessage] | None = None

    async def _next_reply(self, request_topic: str) -> InboundMessage:
        if self._messages is None:
            self._messages = aiter(self._session.messages())
        while True:
            message = await anext(self._messages)
            if message.topic in (f"{request_topic}/accepted", f"{request_topic}/rejected"):
                return message

    async def _request(
        self, step: str, topic: str, payload: dict[str, Any], accept: Any
    ) -> dict[str, Any]:
        await self._session.subscribe([f"{topic}/accepted", f"{topic}/rejected"])
        await self._session.publish(topic, json.dumps(payload).encode(), qos=1)
        try:
            async with asyncio.timeout(self._timeout_s):
                while True:
                    message = await self._next_reply(topic)
                    body = await _decode(message)
                    if message.topic.endswith("/rejected"):
                        raise FleetRejectedError(step, body)
                    if accept(body):
                        return body
        except TimeoutError as exc:
            raise ProvisioningError(
                f"{step}: no answer on {topic}/accepted or /rejected within {self._timeout_s:g} s"
            ) from exc
        except StopAsyncIteration as exc:
            raise ProvisioningError(f"{step}: the connection closed before an answer") from exc

    async def create_from_csr(self, csr_pem: bytes, public_key_matches: Any) -> CreatedCertificate:
        """Send the CSR; ``public_key_matches(certificate_pem) -> bool`` picks our answer."""

        def ours(body: Mapping[str, Any]) -> bool:
            pem = body.get("certificatePem")
            try:
                return isinstance(pem, str) and bool(public_key_matches(pem))
            except GatewayError:
                return False

        body = await self._request(
            "CreateCertificateFromCsr",
            CREATE_FROM_CSR,
            {"certificateSigningRequest": csr_pem.decode()},
            ours,
        )
        certificate_id = _text(body, "certificateId", CREATE_FROM_CSR)
        if not _CERTIFICATE_ID.fullmatch(certificate_id):
            raise ProvisioningError(
                f"CreateCertificateFromCsr answer on {CREATE_FROM_CSR}/accepted: certificateId "
                f"{answers.shown(certificate_id)} is not a certificate id"
            )
        return CreatedCertificate(
            certificate_id=certificate_id,
            certificate_pem=_text(body, "certificatePem", CREATE_FROM_CSR),
            ownership_token=_text(body, "certificateOwnershipToken", CREATE_FROM_CSR),
        )

    async def register_thing(
        self, template: str, ownership_token: str, parameters: Mapping[str, str]
    ) -> Registration:
        topic = provision_topic(template)
        body = await self._request(
            f"RegisterThing (template {template!r})",
            topic,
            {"certificateOwnershipToken": ownership_token, "parameters": dict(parameters)},
            lambda _: True,
        )
        configuration = body.get("deviceConfiguration")
        try:
            thing = answers.thing_name(_text(body, "thingName", topic), "thingName")
        except answers.AnswerError as exc:
            raise ProvisioningError(f"RegisterThing answer on {topic}/accepted: {exc}") from exc
        return Registration(
            thing_name=thing,
            device_configuration=configuration if isinstance(configuration, dict) else {},
        )
