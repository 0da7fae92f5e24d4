"""Temporary AWS credentials: what the clouds answer and what SDKs read (pure, no I/O).

Field names, from each source's own documentation:

- Ioto's ``POST /provision/getCreds`` (Ioto's Provision API reference, "GetCreds"):
  ``{accessKeyId, secretAccessKey, sessionToken, expires, region}``, ``expires`` an ISO 8601
  date (Ioto's agent parses it with ``rParseIsoDate``).
- AWS IoT's credentials provider (AWS IoT developer guide, "Authorizing direct calls to AWS
  services"): ``{"credentials": {accessKeyId, secretAccessKey, sessionToken, expiration}}``.
- ``credential_process`` (AWS CLI user guide, "Sourcing credentials with an external
  process"): ``{Version: 1, AccessKeyId, SecretAccessKey, SessionToken, Expiration}``,
  ``Expiration`` in ISO 8601.
- The container credential provider (AWS SDKs and Tools reference guide, "Container credential
  provider"): ``{AccessKeyId, SecretAccessKey, Token, Expiration}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.errors import GatewayError

MAX_FIELD_CHARS = 4096  # session tokens are ~1 KB; anything far larger is not a credential
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_KEY_ID = re.compile(r"^\w{16,128}$", re.ASCII)  # IAM's AccessKeyIdType


class CredentialsError(GatewayError):
    """Credentials could not be obtained, read, stored or served."""


@dataclass(frozen=True)
class AwsCredentials:
    """One set of temporary credentials. ``repr`` shows no secret (they are never logged)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: float  # epoch seconds
    region: str | None = None

    def valid_at(self, now: float, margin_s: float = 0.0) -> bool:
        """Still valid ``margin_s`` after ``now``."""
        return now + margin_s < self.expiration

    @property
    def expiration_iso(self) -> str:
        return iso8601(self.expiration)

    def credential_process(self) -> dict[str, Any]:
        """What ``credential_process`` prints."""
        return {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration_iso,
        }

    def container(self) -> dict[str, Any]:
        """What the container credential provider's endpoint answers."""
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": self.expiration_iso,
        }

    def to_json(self) -> dict[str, Any]:
        """The stored form (``store``): the credential_process shape plus the region."""
        return {**self.credential_process(), "Region": self.region}

    @classmethod
    def from_json(cls, data: object) -> AwsCredentials:
        """The stored form back; CredentialsError when it is not one."""
        if not isinstance(data, dict) or data.get("Version") != 1:
            raise CredentialsError("not a stored credentials document (Version 1)")
        return _build(
            data.get("AccessKeyId"),
            data.get("SecretAccessKey"),
            data.get("SessionToken"),
            data.get("Expiration"),
            data.get("Region"),
            what="stored credentials",
        )


def iso8601(epoch: float) -> str:
    """``2026-12-01T18:00:00Z``: UTC, whole seconds (what SDKs parse)."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso8601(text: object, *, what: str) -> float:
    """An ISO 8601 date-time with a zone (``Z`` or an offset) as epoch seconds."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise CredentialsError(f"{what}: expected an ISO 8601 date-time")
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise CredentialsError(f"{what}: expected an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise CredentialsError(f"{what}: the date-time has no time zone")
    return moment.timestamp()


def _text(value: object, name: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise CredentialsError(f"{what}: '{name}' must be a non-empty string")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise CredentialsError(f"{what}: '{name}' holds spaces or control characters")
    return value


def _build(
    key_id: object,
    secret: object,
    token: object,
    expires: object,
    region: object,
    *,
    what: str,
    expires_name: str = "Expiration",
) -> AwsCredentials:
    access_key_id = _text(key_id, "access key id", what)
    if not _KEY_ID.match(access_key_id):
        raise CredentialsError(f"{what}: the access key id is not one AWS issues")
    if region is not None and (not isinstance(region, str) or not _REGION.match(region)):
        raise CredentialsError(f"{what}: 'region' is not an AWS region name")
    return AwsCredentials(
        access_key_id=access_key_id,
        secret_access_key=_text(secret, "secret access key", what),
        session_token=_text(token, "session token", what),
        expiration=parse_iso8601(expires, what=f"{what}: '{expires_name}'"),
        region=region,
    )


def from_getcreds(answer: object) -> AwsCredentials:
    """Ioto's getCreds answer (fields named in the module's docstring)."""
    what = "getCreds answer"
    if not isinstance(answer, dict):
        raise CredentialsError(f"{what}: expected a JSON object")
    return _build(
        answer.get("accessKeyId"),
        answer.get("secretAccessKey"),
        answer.get("sessionToken"),
        answer.get("expires"),
        answer.get("region"),
        what=what,
        expires_name="expires",
    )


def from_role_alias(answer: object, region: str | None) -> AwsCredentials:
    """AWS IoT's credentials provider answer; ``region`` from the endpoint or the config."""
    what = "credentials provider answer"
    inner = answer.get("credentials") if isinstance(answer, dict) else None
    if not isinstance(inner, dict):
        raise CredentialsError(f'{what}: expected {{"credentials": {{...}}}}')
    return _build(
        inner.get("accessKeyId"),
        inner.get("secretAccessKey"),
        inner.get("sessionToken"),
        inner.get("expiration"),
        region,
        what=what,
        expires_name="expiration",
    )
