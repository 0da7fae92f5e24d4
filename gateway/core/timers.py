"""Named one-shot timers as tasks of one task group, on an injected clock.

Every timer of the daemon (pulse and blink ends, fail-safe delays, held-back values, shadow
reply expiry and retries) is one of these: nothing is an untracked ``call_later`` handle, a
failing action is logged instead of ending anything, and tests move time with a fake
``monotonic``/``sleep`` pair instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from gateway.core.ports import Clock

log = structlog.get_logger()

Sleep = Callable[[float], Awaitable[None]]


class Timers:
    """Named one-shot timers, each a task of one task group; starting a name again replaces
    it. Timers started before ``run()`` wait for it (their deadline still counts from now)."""

    def __init__(self, *, monotonic: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._monotonic = monotonic
        self._sleep = sleep
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, tuple[float, Callable[[], None]]] = {}

    def start(self, name: str, delay_s: float, action: Callable[[], None]) -> None:
        self.cancel(name)
        deadline = self._monotonic() + delay_s
        if self._group is None:
            self._waiting[name] = (deadline, action)
        else:
            self._spawn(name, deadline, action)

    def cancel(self, name: str) -> None:
        self._waiting.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def cancel_matching(self, prefix: str) -> None:
        for name in [n for n in (*self._tasks, *self._waiting) if n.startswith(prefix)]:
            self.cancel(name)

    def pending(self, name: str) -> bool:
        return name in self._tasks or name in self._waiting

    def _spawn(self, name: str, deadline: float, action: Callable[[], None]) -> None:
        assert self._group is not None
        self._tasks[name] = self._group.create_task(
            self._fire(name, deadline, action), name=f"timer:{name}"
        )

    async def _fire(self, name: str, deadline: float, action: Callable[[], None]) -> None:
        await self._sleep(max(0.0, deadline - self._monotonic()))
        self._tasks.pop(name, None)
        try:
            action()
        except Exception as exc:  # a failing behaviour must never end the task group
            log.error("timer_action_failed", timer=name, error=type(exc).__name__, detail=str(exc))

    async def run(self) -> None:
        """Host the timers until cancelled; every timer is cancelled with it."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for name, (deadline, action) in list(self._waiting.items()):
                    self._spawn(name, deadline, action)
                self._waiting.clear()
                await asyncio.Event().wait()  # until cancelled
        finally:
            self._group = None
            self._tasks.clear()
