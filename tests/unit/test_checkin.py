"""The pure check-in decisions: request body, offer parsing, skip rules, jitter, window, URLs,
bounded decoding, version order, manifests and which redirects are followed."""

from __future__ import annotations

import json
from datetime import time as clock_time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.jsonlimits import json_depth
from gateway.updates.checkin import (
    JITTER,
    Attempt,
    Manifest,
    Offer,
    OfferError,
    Window,
    checkin_body,
    compare_versions,
    decode_json,
    manifest_problem,
    newer_problem,
    next_checkin_s,
    parse_manifest,
    parse_offer,
    should_apply,
    url_problem,
    version_problem,
)
from gateway.updates.http import redirect_problem

SUM = "ab" * 32
times = st.times().map(lambda t: t.replace(tzinfo=None))


def test_body_has_the_standard_fields_and_extras_cannot_override_them() -> None:
    body = checkin_body(
        thing="pi-1",
        product_id="gw",
        test=True,
        version="1.0",
        extra={"hw": "rev2", "id": "spoofed", "version": "0"},
    )
    assert body == {"id": "pi-1", "productId": "gw", "test": True, "version": "1.0", "hw": "rev2"}


@pytest.mark.parametrize("answer", [None, {}, {"version": ""}, {"version": None}, {"url": "x"}])
def test_empty_or_versionless_answers_mean_up_to_date(answer: object) -> None:
    assert parse_offer(answer, "1.0") is None


def test_the_running_version_means_up_to_date() -> None:
    assert parse_offer({"version": "1.0", "url": "https://h/a", "checksum": SUM}, "1.0") is None


def test_an_offer_is_parsed_with_a_lower_case_checksum() -> None:
    offer = parse_offer(
        {"version": "1.1", "url": "https://h/a.whl", "checksum": SUM.upper(), "signature": "c2ln"},
        "1.0",
    )
    assert offer == Offer("1.1", "https://h/a.whl", SUM, "c2ln")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([1], "JSON object"),
        ({"version": 2, "url": "https://h/a", "checksum": SUM}, "string"),
        ({"version": "1.1", "checksum": SUM}, "url"),
        ({"version": "1.1", "url": "http://example.com/a", "checksum": SUM}, "https"),
        ({"version": "1.1", "url": "https://h/a", "checksum": "abc"}, "SHA-256"),
        ({"version": "1.1", "url": "https://h/a", "checksum": SUM, "signature": 5}, "base64"),
    ],
)
def test_malformed_offers_are_errors(answer: object, message: str) -> None:
    with pytest.raises(OfferError, match=message):
        parse_offer(answer, "1.0")


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://iot.example.com/provision/checkin", True),
        ("http://127.0.0.1:8443/provision/checkin", True),
        ("http://[::1]/x", True),
        ("http://localhost/x", True),
        ("http://192.168.1.5/x", False),
        ("http://iot.example.com/x", False),
        ("ftp://iot.example.com/x", False),
        ("https://user:pw@iot.example.com/x", False),
        ("https:///nohost", False),
    ],
)
def test_only_https_or_loopback_http_urls_are_allowed(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


def test_a_rolled_back_artifact_is_skipped_unless_its_checksum_changed() -> None:
    offer = Offer("2.0", "https://h/a", SUM)
    rolled_back = [Attempt("2.0", SUM)]
    assert should_apply(offer, running_version="1.0", rolled_back=rolled_back) is not None
    fixed = Offer("2.0", "https://h/a", "cd" * 32)
    assert should_apply(fixed, running_version="1.0", rolled_back=rolled_back) is None
    assert should_apply(offer, running_version="2.0", rolled_back=[]) == "up to date"


@given(st.floats(1, 10_000_000), st.floats(0, 1))
def test_checkins_are_jittered_by_at_most_ten_percent(interval: float, fraction: float) -> None:
    delay = next_checkin_s(interval, lambda low, high: low + (high - low) * fraction)
    assert interval * (1 - JITTER) - 1e-6 <= delay <= interval * (1 + JITTER) + 1e-6


@given(times, times, times)
def test_the_window_opens_exactly_when_it_says(
    start: clock_time, end: clock_time, now: clock_time
) -> None:
    start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
    if start == end:
        return
    window = Window(start, end)
    wait = window.seconds_until_open(now)
    assert 0 <= wait < 86_400
    assert (wait == 0) == window.is_open(now)
    if wait:
        # ``wait`` seconds later it is exactly the start time: open.
        seconds = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6 + wait
        seconds = round(seconds) % 86_400
        assert window.is_open(clock_time(seconds // 3600, seconds // 60 % 60, seconds % 60))


def test_windows_parse_and_may_wrap_midnight() -> None:
    window = Window.parse("22:30-02:00")
    assert window.is_open(clock_time(23, 0)) and window.is_open(clock_time(1, 59))
    assert not window.is_open(clock_time(2, 0)) and not window.is_open(clock_time(12, 0))
    assert Window.parse("02:00-04:00").seconds_until_open(clock_time(1, 0)) == 3600
    for bad in ("2-4", "25:00-01:00", "02:00-02:00", "02:60-03:00"):
        with pytest.raises(ValueError):
            Window.parse(bad)


# --- bounded decoding, versions, manifests, redirects (issue 19) ---------------------------------


def test_answers_are_refused_by_size_and_nesting_before_parsing() -> None:
    assert decode_json(b"  ", what="x") is None
    assert decode_json(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', what="x") == {"a": "[" * 33}
    with pytest.raises(OfferError, match="nested deeper"):
        decode_json(b"[" * 30_000 + b"]" * 30_000, what="x")
    with pytest.raises(OfferError, match="larger than"):
        decode_json(b"[" * 100_000 + b"]" * 100_000, what="x")
    with pytest.raises(OfferError, match="not JSON"):
        decode_json(b'{"a": ', what="x")


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_nesting_depth_matches_the_structure(value: object) -> None:
    def depth(item: object) -> int:
        if isinstance(item, list):
            return 1 + max((depth(i) for i in item), default=0)
        if isinstance(item, dict):
            return 1 + max((depth(i) for i in item.values()), default=0)
        return 0

    assert json_depth(json.dumps(value).encode()) == depth(value)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0", "2.0"),
        ("1.9", "1.10"),
        ("1.0rc1", "1.0"),
        ("1.0.dev1", "1.0a1"),
        ("1.0a2", "1.0b1"),
        ("1.0", "1.0.post1"),
        ("2.0", "9.9.9"),
        ("fw-9", "fw-10"),
    ],
)
def test_versions_compare_sanely(older: str, newer: str) -> None:
    assert compare_versions(older, newer) == -1
    assert compare_versions(newer, older) == 1
    assert compare_versions(newer, newer) == 0


def test_versions_equal_in_value_compare_equal() -> None:
    assert compare_versions("1.0", "1.0.0") == 0


@pytest.mark.parametrize("version", ["--erase-all", "-1", "1 2", "a/b", "../x", "1;rm", "x" * 65])
def test_option_or_path_shaped_versions_are_refused_in_the_offer(version: str) -> None:
    assert version_problem(version) is not None
    with pytest.raises(OfferError, match="'version'"):
        parse_offer({"version": version, "url": "https://h/a", "checksum": SUM}, "1.0")


def manifest(**changes: object) -> Manifest:
    fields: dict[str, object] = {"product": "gw", "version": "2.0", "sha256": SUM, "size": 10}
    return Manifest(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_manifest_round_trips_through_its_signed_bytes() -> None:
    signed = manifest(min_version="1.0", downgrade=True)
    assert parse_manifest(signed.dumps()) == signed
    with pytest.raises(OfferError, match="type"):
        parse_manifest(b'{"product": "gw"}')
    with pytest.raises(OfferError, match="size"):
        parse_manifest(manifest(size=-1).dumps())


@pytest.mark.parametrize(
    ("signed", "offered", "running", "problem"),
    [
        (manifest(), "2.0", "1.0", None),
        (manifest(), "2.0", None, None),  # command mode before the first update
        (manifest(product="other"), "2.0", "1.0", "product"),
        (manifest(version="1.0"), "2.0", "1.0", "for version 1.0, not 2.0"),
        (manifest(sha256="cd" * 32), "2.0", "1.0", "sha256"),
        (manifest(), "2.0", "2.0", "not newer"),
        (manifest(), "2.0", "3.0", "not newer"),
        (manifest(downgrade=True), "2.0", "3.0", None),
        (manifest(min_version="1.5"), "2.0", "1.0", "may replace 1.5 or newer"),
    ],
)
def test_a_manifest_binds_product_version_and_artifact(
    signed: Manifest, offered: str, running: str | None, problem: str | None
) -> None:
    offer = Offer(offered, "https://h/a", SUM)
    found = manifest_problem(signed, offer, product_id="gw", running_version=running)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_without_a_manifest_only_newer_versions_are_taken() -> None:
    assert newer_problem(Offer("1.0", "https://h/a", SUM), "2.0") is not None
    assert newer_problem(Offer("2.1", "https://h/a", SUM), "2.0") is None


@pytest.mark.parametrize(
    ("target", "method", "status", "ok"),
    [
        ("https://cloud.example/b", "GET", 302, True),
        ("https://cloud.example/b", "POST", 307, True),
        ("https://cloud.example/b", "POST", 302, False),
        ("http://cloud.example/b", "GET", 302, False),
        ("https://other.example/b", "GET", 302, False),
        ("https://cloud.example:8443/b", "GET", 302, False),
        ("http://127.0.0.1:8080/b", "GET", 302, False),
    ],
)
def test_only_same_origin_https_redirects_are_followed(
    target: str, method: str, status: int, ok: bool
) -> None:
    problem = redirect_problem("https://cloud.example/a", target, method=method, status=status)
    assert (problem is None) is ok
