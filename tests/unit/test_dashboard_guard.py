"""DashboardGuard's decisions (issue 19): which Host names the dashboard, and what a change must
carry. The same checks run against real HTTP and Chromium in tests/hostile/test_devcloud.py."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.devcloud.web import DashboardGuard

PORT = 8080


def guard_on(host: str, port: int = PORT) -> DashboardGuard:
    guard = DashboardGuard(token="t0ken")
    guard.bind(host, port)
    return guard


@pytest.mark.parametrize(
    ("bound", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8080", True),
        ("127.0.0.1", "localhost:8080", True),
        ("127.0.0.1", "LOCALHOST:8080", True),
        ("127.0.0.1", "127.0.0.1:8081", False),
        ("127.0.0.1", "127.0.0.1", False),  # no port means 80
        ("127.0.0.1", "attacker.example:8080", False),
        ("127.0.0.1", "127.0.0.2:8080", False),
        ("127.0.0.1", "127.0.0.1:80:8080", False),
        ("127.0.0.1", "", False),
        ("::1", "[::1]:8080", True),
        ("::1", "localhost:8080", True),
        ("::1", "[::1]", False),
        ("localhost", "127.0.0.1:8080", True),
        ("localhost", "[::1]:8080", True),
        ("192.168.1.5", "192.168.1.5:8080", True),
        ("192.168.1.5", "localhost:8080", False),
        ("0.0.0.0", "192.168.1.5:8080", True),  # a wildcard bind, on purpose
        ("0.0.0.0", "localhost:8080", True),
        ("0.0.0.0", "rebound.example:8080", False),
    ],
)
def test_host_must_name_the_bound_address(bound: str, host: str, allowed: bool) -> None:
    assert guard_on(bound).host_allowed(host) is allowed


def test_port_80_may_be_left_out_of_host() -> None:
    assert guard_on("127.0.0.1", 80).host_allowed("127.0.0.1")


def test_an_unbound_guard_refuses_everything() -> None:
    guard = DashboardGuard()
    assert not guard.host_allowed("127.0.0.1:8080")
    assert len(guard.token) >= 40 and guard.token != DashboardGuard().token


def refusal_status(headers: dict[str, str], method: str = "POST") -> int | None:
    request = make_mocked_request(method, "/api/things/x/desired", headers=headers)
    refused = guard_on("127.0.0.1").refusal(request)
    return None if refused is None else refused.status


GOOD = {
    "Host": "127.0.0.1:8080",
    "Origin": "http://127.0.0.1:8080",
    "Content-Type": "application/json; charset=utf-8",
    "X-Dashboard-Token": "t0ken",
}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({}, None),
        ({"Host": "localhost:8080", "Origin": "http://localhost:8080"}, None),
        ({"Sec-Fetch-Site": "same-origin"}, None),
        ({"Origin": "http://localhost:8080"}, 403),  # Origin and Host must agree
        ({"Origin": "http://127.0.0.1:9999"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Content-Type": "text/plain"}, 415),
        ({"X-Dashboard-Token": "t0ke"}, 403),
        ({"X-Dashboard-Token": "tökén"}, 403),
        ({"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, 403),
    ],
)
def test_a_change_needs_same_origin_json_and_the_token(
    change: dict[str, str], status: int | None
) -> None:
    assert refusal_status({**GOOD, **change}) == status


def test_a_change_without_origin_or_token_is_refused() -> None:
    for missing in ("Origin", "X-Dashboard-Token"):
        headers = {k: v for k, v in GOOD.items() if k != missing}
        assert refusal_status(headers) == 403


def test_reads_need_only_the_right_host() -> None:
    assert refusal_status({"Host": "127.0.0.1:8080"}, "GET") is None
    assert refusal_status({"Host": "evil.example:8080"}, "GET") == 403
