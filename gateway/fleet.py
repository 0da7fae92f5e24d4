"""AWS IoT fleet provisioning by claim over MQTT (JSON payloads), on the ``MqttSession`` port.

1. ``$aws/certificates/create-from-csr/json`` ``{"certificateSigningRequest": PEM}`` ->
   ``.../accepted`` ``{certificateId, certificatePem, certificateOwnershipToken}`` or
   ``.../rejected`` ``{statusCode, errorCode, errorMessage}``;
2. ``$aws/provisioning-templates/<template>/provision/json``
   ``{"certificateOwnershipToken", "parameters"}`` -> ``.../accepted``
   ``{deviceConfiguration, thingName}`` or ``.../rejected``.

The reply topics are subscribed before each request is published. Only a certificate for our
own public key is accepted (a shared broker could carry another device's answer). The private
key never leaves the caller: only the CSR is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.errors import GatewayError, ProvisioningError
from gateway.ports import InboundMessage, MqttSession

log = structlog.get_logger()

CREATE_FROM_CSR = "$aws/certificates/create-from-csr/json"


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
        super().__init__(
            f"{step} rejected: {self.status_code} {self.error_code}"
            + (f": {message}" if message else "")
        )


def _decode(message: InboundMessage) -> dict[str, Any]:
    try:
        body = json.loads(message.payload)
    except ValueError as exc:
        raise ProvisioningError(f"{message.topic}: the answer is not JSON") from exc
    if not isinstance(body, dict):
        raise ProvisioningError(f"{message.topic}: the answer is not a JSON object")
    return body


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
                    body = _decode(message)
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
        return CreatedCertificate(
            certificate_id=_text(body, "certificateId", CREATE_FROM_CSR),
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
        return Registration(
            thing_name=_text(body, "thingName", topic),
            device_configuration=configuration if isinstance(configuration, dict) else {},
        )
