"""Config models of temporary AWS credentials and of log shipping to CloudWatch Logs.

``credentials:`` says where the gateway gets temporary AWS credentials: Ioto's Provision API
(``source: getcreds``, ``POST .../provision/getCreds``, authenticated as check-in is) or AWS IoT
Core's own credentials provider (``source: role_alias``, ``GET https://<endpoint>/role-aliases/
<alias>/credentials`` over mutual TLS with the thing's certificate). ``credentials.http``
serves them to local programs as the container credential provider expects;
``logging.cloudwatch`` ships the gateway's log lines with them.

The root model (``schema.GatewayConfig``) holds them as ``credentials`` and
``logging.cloudwatch``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeAlias

from gateway.config.formats import is_loopback_host, parse_listen, url_problem
from gateway.config.paths import OptionalExistingFile, ResolvedPath
from gateway.config.rules import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    model,
)

__all__ = [
    "CloudWatchConfig",
    "CredentialsConfig",
    "CredentialsHttpConfig",
    "CredentialsRetryConfig",
    "GetCredsConfig",
    "RoleAliasConfig",
    "region_of_endpoint",
]

# AWS region names as they appear in endpoints: eu-west-1, us-gov-west-1, cn-north-1.
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$"
# AWS IoT's credentials endpoint: <prefix>.credentials.iot.<region>.amazonaws.com[.cn]
_CREDENTIALS_HOST = re.compile(
    r"\.credentials\.iot\.([a-z]{2}(?:-[a-z]+)+-\d{1,2})\.amazonaws\.com"
)


def _url(value: str) -> str:
    if (problem := url_problem(value)) is not None:
        raise ValueError(problem)
    return value


def region_of_endpoint(host: str) -> str | None:
    """The region an AWS IoT credentials endpoint names, or None (a local or custom host)."""
    match = _CREDENTIALS_HOST.search(host.lower())
    return match.group(1) if match else None


@model
class CredentialsRetryConfig:
    """Backoff with full jitter after a failed fetch."""

    min_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_s: Annotated[float, Field(gt=0, le=3600)] = 300.0

    def __post_init__(self) -> None:
        if self.min_s > self.max_s:
            raise ValueError("min_s must not exceed max_s")


def _loopback_listen(value: tuple[str, int]) -> tuple[str, int]:
    if not is_loopback_host(value[0]):
        raise ValueError("credentials are served on a loopback address only, e.g. 127.0.0.1:8790")
    return value


@model
class CredentialsHttpConfig:
    """A loopback endpoint for ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (as Greengrass's token
    exchange service): answered only with the token of ``token_file`` in ``Authorization``."""

    listen: Annotated[
        tuple[str, int], BeforeValidator(parse_listen), AfterValidator(_loopback_listen)
    ]
    # Read when it exists, else created (0640) with a random token; null: state_dir's.
    token_file: ResolvedPath | None = None


@model
class _SourceBase:
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Fetch new credentials this long before the old ones expire (Ioto: 20 minutes); for
    # credentials living less than twice this, at half their lifetime.
    refresh_before_s: Annotated[float, Field(ge=0, le=86_400)] = 1200.0
    retry: CredentialsRetryConfig = CredentialsRetryConfig()
    region: Annotated[str, Field(pattern=REGION_PATTERN)] | None = None  # overrides the answer's
    http: CredentialsHttpConfig | None = None  # not given: no loopback endpoint


@model
class GetCredsConfig(_SourceBase):
    """Ioto's Provision API: ``POST url`` answers ``{accessKeyId, secretAccessKey,
    sessionToken, expires, region}``; authenticated as check-in is."""

    source: Literal["getcreds"]
    url: Annotated[str, AfterValidator(_url)]  # https (http only on loopback)
    token_file: OptionalExistingFile = None  # "Authorization: Bearer <token>"
    client_cert: bool = False  # present mqtt.cert/mqtt.key (mutual TLS)
    ca: OptionalExistingFile = None  # null: the system's trust store


@model
class RoleAliasConfig(_SourceBase):
    """AWS IoT's credentials provider, over mutual TLS with mqtt.cert/mqtt.key."""

    source: Literal["role_alias"]
    # aws iot describe-endpoint --endpoint-type iot:CredentialProvider (HOST or HOST:PORT)
    endpoint: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?$", max_length=253)]
    # CreateRoleAlias: 1-128 characters of [\w=,@-]
    role_alias: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w=,@-]+$")]
    ca: OptionalExistingFile = None  # null: mqtt.ca (Amazon Root CA 1 for both)

    @property
    def endpoint_region(self) -> str | None:
        return region_of_endpoint(self.endpoint.rsplit(":", 1)[0])


# The union's tags are capitalised: the config loader's error locations skip such tags (as
# it does device types), so a problem is reported at credentials.url, not at an inner name.
_SOURCE_TAGS = {"getcreds": "GetCreds", "role_alias": "RoleAlias"}


def _source_tag(value: object) -> str | None:
    source = value.get("source") if isinstance(value, dict) else getattr(value, "source", None)
    return _SOURCE_TAGS.get(source) if isinstance(source, str) else None


CredentialsConfig: TypeAlias = Annotated[
    Annotated[GetCredsConfig, Tag("GetCreds")] | Annotated[RoleAliasConfig, Tag("RoleAlias")],
    Discriminator(
        _source_tag,
        custom_error_type="credentials_source",
        custom_error_message="expected 'source: getcreds' or 'source: role_alias'",
    ),
]

# CloudWatch Logs' names: CreateLogGroup and CreateLogStream.
LogGroupName = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[\.\-_/#A-Za-z0-9]+$")]
LogStreamName = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^:*]+$")]


@model
class CloudWatchConfig:
    """``logging.cloudwatch``: ship every log line to a CloudWatch Logs stream."""

    group: LogGroupName
    stream: LogStreamName | None = None  # null: the thing name
    region: Annotated[str, Field(pattern=REGION_PATTERN)] | None = None  # null: the credentials'
    # null: https://logs.<region>.amazonaws.com/ (a VPC endpoint or a local test server here)
    endpoint: Annotated[str, AfterValidator(_url)] | None = None
    flush_s: Annotated[float, Field(gt=0, le=3600)] = 5.0  # Ioto sends after 5 s too
    # Lines kept while CloudWatch is unreachable; beyond either bound the oldest are dropped.
    max_buffer_events: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_buffer_bytes: Annotated[int, Field(ge=65_536, le=256 * 1024 * 1024)] = 4 * 1024 * 1024
