"""The dashboard's chart history: what is plotted, and the bounds that keep it small."""

from __future__ import annotations

import pytest

from gateway.devcloud.web.history import History, plottable


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (True, 1.0),
        (False, 0.0),
        (3, 3.0),
        (-0.5, -0.5),
        (10**400, None),
        ("on", None),
        ([0.1, 0.2, 0.3], None),
        (None, None),
        ({"blink": {}}, None),
    ],
)
def test_on_off_values_and_finite_numbers_are_plotted(value: object, number: float | None) -> None:
    assert plottable(value) == number


def test_a_point_older_than_the_window_is_dropped_but_the_value_at_its_start_is_kept() -> None:
    history = History(window_s=100)
    for at, value in [(0, False), (10, True), (50, False), (120, True)]:
        history.add("", "button", "reported", at, value)
    # At 150 the window starts at 50: the point at 50 is the value the chart starts with.
    assert history.view(150) == {"": {"button": {"reported": [[50, 0.0], [120, 1.0]]}}}
    assert history.view(500) == {"": {"button": {"reported": [[120, 1.0]]}}}


def test_desired_marks_leave_with_the_window() -> None:
    history = History(window_s=100)
    history.add("", "led", "desired", 0, True)
    history.add("", "led", "desired", 90, False)
    assert history.view(150) == {"": {"led": {"desired": [[90, 0.0]]}}}
    assert history.view(200) == {}


def test_a_series_keeps_only_its_newest_points() -> None:
    history = History(max_points=3)
    for at in range(10):
        history.add("", "button", "reported", at, at % 2 == 0)
    assert [at for at, _ in history.view(10)[""]["button"]["reported"]] == [7, 8, 9]


def test_a_thing_reporting_many_keys_gets_only_so_many_charts() -> None:
    history = History(max_series=2)
    points = [history.add("", f"k{i}", "reported", 0, 1) for i in range(5)]
    assert [p is not None for p in points] == [True, True, False, False, False]
    assert history.add("", "k0", "desired", 1, 2) is not None  # a known resource still records
    assert set(history.view(1)[""]) == {"k0", "k1"}


def test_a_deleted_shadow_forgets_its_charts_and_frees_their_places() -> None:
    history = History(max_series=1)
    history.add("named", "x", "reported", 0, 1)
    history.forget("named")
    assert history.view(0) == {}
    assert history.add("", "y", "reported", 0, 1) is not None


def test_a_point_is_returned_as_the_feed_sends_it() -> None:
    history = History()
    assert history.add("", "fan", "desired", 12.5, 0.25) == {
        "shadow": "",
        "key": "fan",
        "kind": "desired",
        "at": 12.5,
        "value": 0.25,
    }
    assert history.add("", "label", "reported", 13, "text") is None
