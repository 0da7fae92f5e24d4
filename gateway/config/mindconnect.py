"""The ``mindconnect:`` block: the gateway as a Siemens Insights Hub (MindConnect MQTT) agent.

Siemens' contract (the "Onboarding MindConnect MQTT Agent" how-to and the public sample
github.com/mindsphere/mindconnect-mqtt): broker ``mindconnectmqtt.eu1.mindsphere.io:8883``,
TLS 1.2+, the broker's root CA (``MindSphereRootCA1.pem``), an agent certificate and key, and
with your own CA the agent's chain (agent certificate + tenant CA). The client id is
``<tenant>_<CN of the agent certificate>``; keepalive (60 s) and ``clean_session`` (false) are
the contract's and not configurable. ``cert``/``key`` not given: the files
``edge-gateway mindconnect agent-cert`` installs in ``state_dir/certs/``.
"""

from __future__ import annotations

from typing import Annotated

from gateway.config.paths import ExistingFile, OptionalExistingFile
from gateway.config.rules import Field, model

DEFAULT_HOST = "mindconnectmqtt.eu1.mindsphere.io"

# A tenant name goes into the client id and every topic (tc/<tenant>/<clientId>/...): no MQTT
# wildcard, separator or control character can be part of it.
TenantName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@model
class MindConnectConfig:
    tenant: TenantName
    host: Annotated[str, Field(min_length=1, max_length=253)] = DEFAULT_HOST
    port: Annotated[int, Field(ge=1, le=65_535)] = 8883
    ca: ExistingFile  # the broker's root CA (MindSphereRootCA1.pem)
    cert: OptionalExistingFile = None  # default: state_dir/certs/mindconnect-cert.pem
    key: OptionalExistingFile = None  # default: state_dir/certs/mindconnect-privkey.pem
    chain: OptionalExistingFile = None  # own CA: the tenant CA, presented after the cert
    # Points are sent at most this often, all that waited in one batch (0: as they come).
    publish_interval_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 1000
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
