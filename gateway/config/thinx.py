"""The ``thinx:`` block: register with a THiNX server, check in, report status over MQTT, take
configuration pushes and firmware (see docs/thinx.md).

Field names follow the gateway's config style; what goes on the wire is THiNX's (see
``gateway.links.thinx.protocol``).
"""

from __future__ import annotations

import re
from typing import Annotated

from gateway.config.formats import is_loopback_host, url_problem
from gateway.config.paths import ExistingFile, OptionalExistingFile
from gateway.config.rules import AfterValidator, Field, model

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
# THiNX owner ids and aliases end up in topics (/<owner>/<udid>): no MQTT wildcards, no '/'.
_TOPIC_WORD = r"^[A-Za-z0-9_.:-]{1,128}$"


def _url(value: str) -> str:
    if (problem := url_problem(value)) is not None:
        raise ValueError(problem)
    return value.rstrip("/")


@model
class ThinxRetryConfig:
    """Backoff with full jitter after a failed check-in (auth failures wait the cap)."""

    min_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    max_s: Annotated[float, Field(gt=0, le=86_400)] = 3600.0


@model
class ThinxMqttConfig:
    """THiNX's broker: user name = the udid, password = the API key."""

    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65_535)] = 8883
    ca: OptionalExistingFile = None  # CA bundle for the broker; null: the system's trust store
    # publishStatus (retained) or publishStatusUnretained (THiNXLib): the status messages.
    retain_status: bool = False
    # Plain MQTT (1883) only when asked for, and only to a loopback host (tests, a local proxy).
    allow_plaintext: bool = False
    keepalive_s: Annotated[int, Field(ge=5, le=1200)] = 60
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    def __post_init__(self) -> None:
        if self.allow_plaintext and not is_loopback_host(self.host):
            raise ValueError("allow_plaintext is accepted only for a loopback host")


def _template_parses(value: str) -> str:
    from string import Formatter

    try:
        parsed = list(Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write {{{{ for a brace") from exc
    for _, name, spec, conversion in parsed:
        if name is not None and (not name.isidentifier() or spec or conversion):
            raise ValueError("write a device name in braces, e.g. {door}; nothing else")
    return value


@model
class ThinxConfig:
    """Registration, check-in, status, configuration and firmware with a THiNX server."""

    url: Annotated[str, AfterValidator(_url)]  # e.g. https://thinx.cloud:7443
    owner: Annotated[str, Field(pattern=_TOPIC_WORD)]
    api_key_file: ExistingFile  # mode 0600: sent only to url and to the broker
    alias: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    mac: Annotated[str, Field(pattern=_MAC.pattern)] | None = None  # default: primary interface
    checkin_interval_s: Annotated[float, Field(ge=1, le=30 * 86_400)] = 86_400.0  # ±10 %
    ca: OptionalExistingFile = None  # CA bundle for the HTTPS API; null: the system's trust store
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    retry: ThinxRetryConfig = ThinxRetryConfig()
    mqtt: ThinxMqttConfig
    # One string per device shown by THiNX; {name} is a device's value; " #e"/" #w" appended.
    status: Annotated[str, Field(max_length=512), AfterValidator(_template_parses)] = "Registered"
    on_configuration: list[Annotated[str, Field(min_length=1)]] | None = None  # argv, no shell
    on_configuration_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The product a signed firmware manifest must name (edge-gateway ota sign --product).
    product_id: Annotated[str, Field(min_length=1, max_length=256)] = "edge-gateway"
