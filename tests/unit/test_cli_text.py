"""Counts in what the commands print read as English: "1 device", "2 devices"."""

from __future__ import annotations

import pytest

from gateway.cli.main import _health_line
from gateway.cli.text import plural


@pytest.mark.parametrize(("count", "expected"), [(0, "0 things"), (1, "1 thing"), (2, "2 things")])
def test_plural_agrees_with_the_count(count: int, expected: str) -> None:
    assert plural(count, "thing") == expected


def test_an_irregular_plural_can_be_given() -> None:
    assert plural(3, "entry", "entries") == "3 entries"


@pytest.mark.parametrize(("days", "text"), [(1.2, "1 day left"), (30.0, "30 days left")])
def test_status_says_certificate_days_in_the_right_number(days: float, text: str) -> None:
    line = _health_line({"healthy": True, "certificate_days_left": days})
    assert line.endswith(f"certificate {text}")
