"""The SigV4 signer against AWS's published test vectors and against botocore's own signer."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.credentials.sigv4 import sign

# The AWS SigV4 test suite's example identity and time.
KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)


def suite(url: str) -> str:
    headers = sign(
        method="GET",
        url=url,
        headers={},
        body=b"",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        session_token=None,
        region="us-east-1",
        service="service",
        now=WHEN,
    )
    return headers["Authorization"]


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        (
            "https://example.amazonaws.com/",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
    ids=["get-vanilla", "get-vanilla-query-order-key-case"],
)
def test_signature_matches_the_aws_test_suite(url: str, signature: str) -> None:
    assert suite(url) == (
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )


def botocore_authorization(
    monkeypatch: pytest.MonkeyPatch, url: str, headers: dict[str, str], body: bytes
) -> str:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: WHEN)
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials(KEY_ID, SECRET, "session-token"), "logs", "eu-west-1").add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize(
    "url",
    ["https://logs.eu-west-1.amazonaws.com/", "http://127.0.0.1:4566/?b=2&a=1%20x"],
    ids=["aws-endpoint", "port-and-query"],
)
def test_put_log_events_is_signed_as_botocore_signs_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    body = json.dumps({"logGroupName": "g", "logEvents": [{"timestamp": 1, "message": "é"}]})
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Logs_20140328.PutLogEvents",
    }
    ours = sign(
        method="POST",
        url=url,
        headers=headers,
        body=body.encode(),
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        session_token="session-token",
        region="eu-west-1",
        service="logs",
        now=WHEN,
    )
    assert ours["Authorization"] == botocore_authorization(monkeypatch, url, headers, body.encode())
    assert ours["X-Amz-Security-Token"] == "session-token"
