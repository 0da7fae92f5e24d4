"""Credentials: the answers of each source, the shapes SDKs read, the stored copy, the token
file, and the config keys (credentials:, logging.cloudwatch)."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.credentials import store
from gateway.credentials.model import (
    AwsCredentials,
    CredentialsError,
    from_getcreds,
    from_role_alias,
)
from gateway.credentials.serving import load_or_create_token
from gateway.errors import ConfigError

GETCREDS = {
    "accessKeyId": "ASIAEXAMPLEKEY000001",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "sessionToken": "FwoGZXIvYXdzEXAMPLE==",
    "expires": "2026-12-01T19:00:00.000Z",
    "region": "eu-west-1",
}


def test_a_getcreds_answer_gives_key_secret_token_expiry_and_region() -> None:
    creds = from_getcreds(GETCREDS)
    assert creds.access_key_id == "ASIAEXAMPLEKEY000001"
    assert creds.session_token == "FwoGZXIvYXdzEXAMPLE=="
    assert creds.expiration_iso == "2026-12-01T19:00:00Z"
    assert creds.region == "eu-west-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accessKeyId": None}, "access key id"),
        ({"sessionToken": ""}, "session token"),
        ({"expires": "2026-12-01T19:00:00"}, "time zone"),
        ({"expires": 1796151600}, "ISO 8601"),
        ({"region": "moon"}, "region"),
        ({"secretAccessKey": "has space"}, "spaces"),
    ],
)
def test_a_malformed_getcreds_answer_is_refused_by_field(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(CredentialsError, match=message):
        from_getcreds({**GETCREDS, **change})


def test_a_role_alias_answer_is_read_from_its_credentials_object() -> None:
    inner = {
        "accessKeyId": "ASIAROLEALIAS0000001",
        "secretAccessKey": "secret",
        "sessionToken": "token",
        "expiration": "2026-12-01T19:00:00Z",
    }
    creds = from_role_alias({"credentials": inner}, "eu-central-1")
    assert (creds.access_key_id, creds.region) == ("ASIAROLEALIAS0000001", "eu-central-1")
    with pytest.raises(CredentialsError):
        from_role_alias(inner, None)  # the fields without the "credentials" wrapper


def test_secrets_never_appear_in_a_repr() -> None:
    text = repr(from_getcreds(GETCREDS))
    assert GETCREDS["secretAccessKey"] not in text and GETCREDS["sessionToken"] not in text


def test_credential_process_and_container_shapes() -> None:
    creds = from_getcreds(GETCREDS)
    assert creds.credential_process() == {
        "Version": 1,
        "AccessKeyId": GETCREDS["accessKeyId"],
        "SecretAccessKey": GETCREDS["secretAccessKey"],
        "SessionToken": GETCREDS["sessionToken"],
        "Expiration": "2026-12-01T19:00:00Z",
    }
    assert creds.container() == {
        "AccessKeyId": GETCREDS["accessKeyId"],
        "SecretAccessKey": GETCREDS["secretAccessKey"],
        "Token": GETCREDS["sessionToken"],
        "Expiration": "2026-12-01T19:00:00Z",
    }


def test_the_stored_copy_is_0600_and_reads_back(tmp_path: Path) -> None:
    creds = AwsCredentials("ASIASTOREDKEY0000001", "s", "t", float(int(time.time())), "us-east-1")
    path = store.credentials_path(tmp_path)
    store.save(path, creds)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.load(path) == creds


def test_a_damaged_stored_copy_reads_as_none(tmp_path: Path) -> None:
    path = store.credentials_path(tmp_path)
    path.write_text('{"Version": 1, "AccessKeyId": "x"')
    assert store.load(path) is None


def test_a_new_token_file_is_0640_without_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = load_or_create_token(path)
    assert path.read_text() == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_or_create_token(path) == token


def test_a_token_file_ending_in_a_line_break_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a-token-of-sixteen-or-more\n")
    with pytest.raises(CredentialsError, match="line break"):
        load_or_create_token(path)


# -- config ------------------------------------------------------------------------------------


def config_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "thing: pi-kitchen\n"
        "mqtt: {host: localhost, ca: ca.pem, cert: cert.pem, key: key.pem}\n" + extra
    )
    return path


def test_role_alias_config_takes_its_region_from_the_endpoint(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        "credentials: {source: role_alias, role_alias: PiLogs,"
        " endpoint: c2abc.credentials.iot.eu-west-1.amazonaws.com}\n",
    )
    config = load_config(path, check_files=False)
    assert config.credentials is not None and config.credentials.source == "role_alias"
    assert config.credentials.endpoint_region == "eu-west-1"


def test_credentials_are_served_on_loopback_only(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        "credentials: {source: getcreds, url: 'https://api.example.com/provision/getCreds',"
        " http: {listen: '0.0.0.0:8790'}}\n",
    )
    with pytest.raises(ConfigError, match="loopback"):
        load_config(path, check_files=False)


def test_log_shipping_needs_a_credentials_block(tmp_path: Path) -> None:
    path = config_with(tmp_path, "logging: {cloudwatch: {group: /edge-gateway/pis}}\n")
    with pytest.raises(ConfigError, match="needs a 'credentials' block"):
        load_config(path, check_files=False)


def test_getcreds_over_plain_http_is_refused_beyond_loopback(tmp_path: Path) -> None:
    path = config_with(
        tmp_path, "credentials: {source: getcreds, url: 'http://api.example.com/getCreds'}\n"
    )
    with pytest.raises(ConfigError, match=r"yaml:3:\d+: credentials\.url: expected https"):
        load_config(path, check_files=False)


def test_a_missing_getcreds_token_file_is_reported_at_its_key(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    path = config_with(
        tmp_path,
        "credentials: {source: getcreds, url: 'https://api.example.com/provision/getCreds',"
        " token_file: missing.token}\n",
    )
    with pytest.raises(ConfigError, match=r"credentials\.token_file: file .* does not exist"):
        load_config(path)


def test_an_unknown_credentials_source_is_refused(tmp_path: Path) -> None:
    path = config_with(tmp_path, "credentials: {source: vault}\n")
    with pytest.raises(ConfigError, match=r"yaml:3:\d+: credentials: expected 'source: getcreds'"):
        load_config(path, check_files=False)
