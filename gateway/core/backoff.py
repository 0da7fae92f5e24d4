"""Reconnect timing: exponential backoff with full jitter, reset after a stable connection.

The daemon's connection loop, its check-ins and the dev cloud's clients all use it."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays of ``uniform(0, min(cap, base * 2**attempt))`` (AWS's "full jitter").

    A connection that stayed up for ``reset_after_s`` starts the sequence over; one that
    dropped sooner keeps doubling, so a flapping link does not hammer the broker.
    """

    def __init__(
        self,
        base_s: float = 1.0,
        cap_s: float = 120.0,
        reset_after_s: float = 60.0,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.reset_after_s = reset_after_s
        self._rng = rng
        self.attempt = 0

    def reset(self) -> None:
        """Start the sequence over (a connection succeeded, for callers that do not time it)."""
        self.attempt = 0

    def ceiling(self) -> float:
        return min(self.cap_s, self.base_s * 2.0**self.attempt)

    def next_delay(self, connected_for_s: float | None = None) -> float:
        """Delay before the next attempt; ``connected_for_s``: how long the last link lived."""
        if connected_for_s is not None and connected_for_s >= self.reset_after_s:
            self.attempt = 0
        delay = self._rng(0.0, self.ceiling())
        self.attempt = min(self.attempt + 1, 32)
        return delay

    def at_cap(self) -> float:
        """A delay drawn at the cap (for failures retrying sooner cannot fix)."""
        self.attempt = 32
        return self._rng(self.cap_s / 2, self.cap_s)
