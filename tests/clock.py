"""A clock the test moves: ``monotonic()`` reads it, ``sleep()`` waits until it is advanced
past the deadline, so timers fire when the test says, not when the wall clock does."""

from __future__ import annotations

import asyncio


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time on and let every sleeper that is due run."""
        self.now += seconds
        due = [(at, f) for at, f in self._sleepers if at <= self.now]
        self._sleepers = [(at, f) for at, f in self._sleepers if at > self.now]
        for _, future in sorted(due, key=lambda item: item[0]):
            if not future.done():
                future.set_result(None)
        for _ in range(10):
            await asyncio.sleep(0)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, future in self._sleepers if not future.done())
