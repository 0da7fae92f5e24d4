"""The last hour of each plotted shadow resource of one thing, bounded in memory.

The dashboard draws a small chart beside each row: the reported value over time (on/off values
as 1/0, numbers as they are) and a mark where desired was set. The dev cloud keeps the points so
a freshly loaded page starts with the last hour instead of an empty chart.

Bounds: a point older than the window is dropped (except the newest such point of a reported
series: it is the value at the window's start, so a switch on for two hours still draws a line);
each series keeps at most ``max_points`` (a flapping input keeps its newest changes); a thing has
at most ``max_series`` plotted resources (a thing reporting thousands of keys cannot grow the dev
cloud's memory; the rest are not plotted).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, Literal

__all__ = ["MAX_POINTS", "MAX_SERIES", "WINDOW_S", "History", "Kind", "plottable"]

WINDOW_S: Final = 3600.0
MAX_POINTS: Final = 500
MAX_SERIES: Final = 32
Kind = Literal["reported", "desired"]
_Series = deque[tuple[float, float]]


def plottable(value: object) -> float | None:
    """The number a chart draws for a shadow value; None for values it does not plot."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a double's range: not a value any device has
        return None
    return number if math.isfinite(number) else None


class History:
    """Points per (shadow, resource, kind); times are the caller's clock (epoch seconds)."""

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        max_points: int = MAX_POINTS,
        max_series: int = MAX_SERIES,
    ) -> None:
        self._window = window_s
        self._max_points = max_points
        self._max_series = max_series
        self._series: dict[tuple[str, str, Kind], _Series] = {}
        self._resources: set[tuple[str, str]] = set()

    def add(
        self, shadow: str, key: str, kind: Kind, at: float, value: object
    ) -> dict[str, object] | None:
        """Record a value; return the point as the dashboard's feed sends it, or None when the
        value is not plotted (not a number or on/off) or the thing has too many resources."""
        number = plottable(value)
        if number is None:
            return None
        resource = (shadow, key)
        if resource not in self._resources:
            if len(self._resources) >= self._max_series:
                return None
            self._resources.add(resource)
        series = self._series.get((shadow, key, kind))
        if series is None:
            series = self._series[(shadow, key, kind)] = deque(maxlen=self._max_points)
        series.append((at, number))
        self._prune(kind, series, at)
        return {"shadow": shadow, "key": key, "kind": kind, "at": at, "value": number}

    def forget(self, shadow: str) -> None:
        """Drop every series of a shadow (it was deleted)."""
        for entry in [entry for entry in self._series if entry[0] == shadow]:
            del self._series[entry]
        self._resources = {resource for resource in self._resources if resource[0] != shadow}

    def view(self, now: float) -> dict[str, dict[str, dict[str, list[list[float]]]]]:
        """``{shadow: {resource: {"reported": [[at, value], ...], "desired": [...]}}}``."""
        out: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
        for (shadow, key, kind), series in self._series.items():
            self._prune(kind, series, now)
            if series:
                points = [[at, value] for at, value in series]
                out.setdefault(shadow, {}).setdefault(key, {})[kind] = points
        return out

    def _prune(self, kind: Kind, series: _Series, now: float) -> None:
        cutoff = now - self._window
        if kind == "reported":
            # Keep the newest point before the window: the value the chart starts with.
            while len(series) > 1 and series[1][0] <= cutoff:
                series.popleft()
        else:
            while series and series[0][0] < cutoff:
                series.popleft()
