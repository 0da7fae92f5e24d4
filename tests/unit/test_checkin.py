"""The pure check-in decisions: request body, offer parsing, skip rules, jitter, window, URLs."""

from __future__ import annotations

from datetime import time as clock_time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.checkin import (
    JITTER,
    Attempt,
    Offer,
    OfferError,
    Window,
    checkin_body,
    next_checkin_s,
    parse_offer,
    should_apply,
    url_problem,
)

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
