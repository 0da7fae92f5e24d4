"""What the THiNX link needs from the composition, as small protocols: an HTTP client (the
gateway's ``HttpClient`` fits), an MQTT connector per login, and a firmware handler (the
gateway's update path). The link imports none of their modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.core.ports import MqttConnector


class HttpAnswer(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


class DownloadedFile(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class ThinxHttp(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        data: bytes | None = None,
        max_bytes: int = ...,
        raise_for_status: bool = True,
    ) -> HttpAnswer: ...

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
    ) -> DownloadedFile: ...


HttpFactory = Callable[[], AbstractAsyncContextManager[ThinxHttp]]


@dataclass(frozen=True)
class MqttLogin:
    """One THiNX MQTT identity: user name = udid, password = API key (THiNXLib start_mqtt)."""

    client_id: str
    username: str
    password: str = field(repr=False)
    will_topic: str
    will_payload: bytes


ConnectorFactory = Callable[[MqttLogin], MqttConnector]


@dataclass(frozen=True)
class FirmwareRequest:
    """How to fetch an offered firmware: ``GET .../device/firmware?ott=`` or ``POST
    .../device/firmware`` with ``{"mac", "owner", "udid"}`` (device.js ``firmware``)."""

    version: str
    url: str
    method: str = "GET"
    json_body: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


# Download, verify (x-MD5, and the signature when ota.public_key is set) and apply; returns
# True when applied, False when the server had nothing to hand out; UpdateError on failure.
FirmwareHandler = Callable[[ThinxHttp, FirmwareRequest], Awaitable[bool]]
