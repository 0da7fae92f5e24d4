"""The device core: the devices' values, every pin write and every local behaviour.

It takes "set these values" (from whichever cloud link) and tells its listeners "these values
changed" (inputs, sensors, the changes it makes itself, and values another link set: the link
that asked handles its own ``Outcome``, every other link hears them as changes). It knows no
cloud: no MQTT, no shadow. Local behaviours live here: pulses, blinks, fail-safe values while
no link is up, interlocks (off before on), follows, and each output's minimum interval. Every
timer is a task of the engine's own task group, sleeping on an injected clock, so tests drive
time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog

from gateway.core.ports import Clock, DeviceBank, EngineListener, Outcome
from gateway.core.rules import Behaviours
from gateway.core.timers import Sleep, Timers
from gateway.core.values import Blink, JsonValue, NativeValue, ValueCodec, is_active
from gateway.errors import GatewayError

log = structlog.get_logger()

SUPERSEDED = "superseded by a value set through another link"


class DeviceEngine:
    """Owns the devices' current values and every write to them."""

    def __init__(
        self,
        *,
        bank: DeviceBank,
        codecs: Mapping[str, ValueCodec],
        behaviours: Behaviours | None = None,
        min_intervals_s: Mapping[str, float] | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.bank = bank
        self.values: dict[str, JsonValue] = {}
        self.timers = Timers(monotonic=monotonic, sleep=sleep)
        self._clock = clock
        self._monotonic = monotonic
        self._listeners: list[EngineListener] = []
        self.configure(codecs=codecs, behaviours=behaviours, min_intervals_s=min_intervals_s)
        self._links_up = 0
        self._last_applied: dict[str, float] = {}
        # Held back by min_interval: the newest value and the listener that asked for it.
        self._deferred: dict[str, tuple[NativeValue, EngineListener | None]] = {}

    def configure(
        self,
        *,
        codecs: Mapping[str, ValueCodec],
        behaviours: Behaviours | None = None,
        min_intervals_s: Mapping[str, float] | None = None,
        bank: DeviceBank | None = None,
    ) -> None:
        """Take a (reloaded) configuration without replacing the engine."""
        self.codecs = dict(codecs)
        self.behaviours = behaviours or Behaviours()
        self.min_intervals = dict(min_intervals_s or {})
        if bank is not None:
            self.bank = bank
        for name in [name for name in self.values if name not in self.codecs]:
            del self.values[name]

    def add_listener(self, listener: EngineListener) -> None:
        self._listeners.append(listener)

    async def run(self) -> None:
        await self.timers.run()

    # -- values in ------------------------------------------------------------------------------

    def prime(self, values: Mapping[str, JsonValue]) -> None:
        """The devices' values at start-up (or after a reload)."""
        self.values.update(values)

    def on_input(self, name: str, value: JsonValue, observed_at: float) -> None:
        """An input or sensor changed (the bank's callback): tell the links, then react."""
        self.values[name] = value
        for listener in self._listeners:
            listener.on_change(name, value, observed_at)
        self._react(name, value)

    def apply(
        self, changes: Mapping[str, NativeValue], *, origin: EngineListener | None = None
    ) -> Outcome:
        """Set validated values: interlocks permitting, offs before ons, each output no more
        often than its minimum interval (the newest held-back value is applied later).

        ``origin`` is the listener (link) asking: it handles the returned ``Outcome`` itself
        (and hears ``on_deferred_applied`` when a held-back value of its own lands); every
        other listener hears each applied value as a change."""
        deferred = frozenset(
            name for name, value in changes.items() if self._defer(name, value, origin)
        )
        applied, refused = self._drive({n: v for n, v in changes.items() if n not in deferred})
        self._tell_others(origin, applied)
        for name, shown in applied.items():
            self._react(name, shown)  # followers of an output move with it
        return Outcome(applied, refused, deferred)

    def restore(
        self, values: Mapping[str, NativeValue], *, origin: EngineListener | None = None
    ) -> None:
        """Outputs put back to their last reported values at start (no behaviours run); the
        listeners other than ``origin`` (the link that restores) hear the values."""
        restored: dict[str, JsonValue] = {}
        for name, value in values.items():
            restored[name] = self._write(name, value)
            log.info("output_restored", device=name, value=self.values[name])
        self._tell_others(origin, restored)

    def _tell_others(self, origin: EngineListener | None, applied: Mapping[str, JsonValue]) -> None:
        if not applied:
            return
        now = self._clock()
        for listener in self._listeners:
            if listener is origin:
                continue
            for name, shown in applied.items():
                listener.on_change(name, shown, now)

    # -- links ------------------------------------------------------------------------------------

    def link_up(self) -> None:
        self._links_up += 1
        self.timers.cancel_matching("failsafe:")

    def link_down(self, *, failsafe: bool = True) -> None:
        """A link went down (or none is up yet): fail-safe values follow if it stays so
        (``failsafe=False`` on a clean stop, when the shutdown values come next)."""
        self._links_up = max(0, self._links_up - 1)
        if self._links_up or not failsafe:
            return
        self.timers.cancel_matching("failsafe:")
        for name, (after_s, value) in self.behaviours.failsafe.items():
            self.timers.start(
                f"failsafe:{name}",
                after_s,
                lambda name=name, value=value: self._failsafe(name, value),  # type: ignore[misc]
            )

    def shutdown(self) -> None:
        """The gateway is stopping: no timer may write a pin any more."""
        self._links_up += 1  # no fail-safe: the shutdown values come next
        self.timers.cancel_matching("")

    # -- local behaviours ------------------------------------------------------------------------

    def raw(self, name: str, value: JsonValue) -> object:
        """A reported value back in device terms (undoing map/scale), for rules."""
        codec = self.codecs.get(name)
        if codec is None or codec.transform is None or isinstance(value, dict):
            return value
        try:
            return codec.transform.to_device(value)
        except GatewayError:
            return value

    def _raw_values(self) -> dict[str, object]:
        return {name: self.raw(name, value) for name, value in self.values.items()}

    def _react(self, source: str, value: JsonValue) -> None:
        follows = self.behaviours.follows
        if not follows.follows:
            return
        active = is_active(self.raw(source, value))
        reactions = follows.reactions(source, active, self._raw_values())
        if reactions:
            self._drive_local(dict(reactions), cause=f"follow {source}")

    def _drive_local(self, changes: dict[str, NativeValue], *, cause: str) -> None:
        """Changes the engine makes by itself; reported (and followed) like input changes."""
        applied, refused = self._drive(changes)
        for name, reason in refused.items():
            log.warning("local_change_refused", device=name, reason=reason, cause=cause)
        now = self._clock()
        for name, value in applied.items():
            log.info("local_change_applied", device=name, value=value, cause=cause)
            self.on_input(name, value, now)

    def _drive(
        self, changes: Mapping[str, NativeValue]
    ) -> tuple[dict[str, JsonValue], dict[str, str]]:
        """Write changes, interlocks permitting, offs before ons; returns (applied, refused)."""
        interlocks = self.behaviours.interlocks
        refused = interlocks.refused(self._raw_values(), changes) if interlocks.groups else {}
        allowed = {name: value for name, value in changes.items() if name not in refused}
        applied: dict[str, JsonValue] = {}
        for name in interlocks.ordered(allowed):
            try:
                applied[name] = self._write(name, allowed[name])
            except GatewayError as exc:
                refused[name] = str(exc)
                continue
            self._after_write(name, allowed[name])
        return applied, refused

    def _write(self, name: str, value: NativeValue) -> JsonValue:
        actual = self.bank.write(name, value)
        self.values[name] = actual
        self._last_applied[name] = self._monotonic()
        return actual

    def _after_write(self, name: str, value: NativeValue) -> None:
        self.timers.cancel(f"end:{name}")
        pulse_s = self.behaviours.pulses_s.get(name)
        if pulse_s is not None and value is True:
            self.timers.start(
                f"end:{name}", pulse_s, lambda: self._drive_local({name: False}, cause="pulse end")
            )
        elif isinstance(value, Blink) and value.duration_s is not None:
            self.timers.start(f"end:{name}", value.duration_s, lambda: self._blink_done(name))

    def _blink_done(self, name: str) -> None:
        self.on_input(name, self.bank.read(name), self._clock())

    def _failsafe(self, name: str, value: object) -> None:
        if self._links_up:
            return
        log.warning("failsafe_applied", device=name, value=value, reason="no cloud link is up")
        for listener in self._listeners:
            listener.on_failsafe(name)
        self._drive_local({name: value}, cause="fail-safe")  # type: ignore[dict-item]

    def _defer(self, name: str, value: NativeValue, origin: EngineListener | None) -> bool:
        """Inside the output's minimum interval: keep only the newest value for later."""
        interval = self.min_intervals.get(name, 0.0)
        last = self._last_applied.get(name)
        if not interval or last is None:
            return False
        wait = last + interval - self._monotonic()
        if wait <= 0:
            return False
        held = self._deferred.get(name)
        if held is None:
            self.timers.start(f"deferred:{name}", wait, lambda: self._apply_deferred(name))
        elif held[1] is not None and held[1] is not origin:
            held[1].on_deferred_dropped(name, SUPERSEDED)  # another link's value replaces it
        self._deferred[name] = (value, origin)  # last value wins; nothing queues up
        return True

    def _apply_deferred(self, name: str) -> None:
        value, origin = self._deferred.pop(name)
        applied, refused = self._drive({name: value})
        for refused_name, reason in refused.items():
            log.warning("deferred_change_refused", device=refused_name, reason=reason)
            if origin is not None:
                origin.on_deferred_dropped(refused_name, reason)
        if origin is not None:
            for applied_name, shown in applied.items():
                origin.on_deferred_applied(applied_name, shown)
        self._tell_others(origin, applied)
        for applied_name, shown in applied.items():
            self._react(applied_name, shown)
