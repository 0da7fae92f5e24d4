"""Pure reconciliation logic: desired (delta) -> what to drive -> what to report.

No I/O, no MQTT, no GPIO: everything here takes plain data and a clock, so it is tested
exhaustively with hypothesis. ``shadow.py`` wires it to the transport and the devices.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from gateway.config import ERROR_REASON_CHARS
from gateway.core.values import JsonValue, NativeValue, ValueCodec
from gateway.errors import DeviceValueError

GATEWAY_KEY = "gateway"
UNKNOWN_KEYS_KEY = "unknown_keys"  # reported.gateway.unknown_keys: desired keys with no device
UNKNOWN_REASON = "unknown resource: no device of that name is configured"
MAX_CLIENT_TOKEN_BYTES = 64
# The unknown-key summary stays small whatever a desired document holds: a count (itself capped)
# and the first few names, each cut short.
MAX_UNKNOWN_TRACKED = 1000
MAX_UNKNOWN_NAMES_SHOWN = 10
MAX_UNKNOWN_NAME_CHARS = 64


@dataclass(frozen=True)
class DeltaPlan:
    """What to do about one delta (or the delta of a fetched document); immutable: the
    methods below give changed copies."""

    version: int
    stale: bool = False
    apply: Mapping[str, NativeValue] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)  # configured name -> reason
    unknown: tuple[str, ...] = ()  # desired keys that name no configured device

    def __post_init__(self) -> None:
        object.__setattr__(self, "apply", MappingProxyType(dict(self.apply)))
        object.__setattr__(self, "rejected", MappingProxyType(dict(self.rejected)))

    def without(self, names: Iterable[str]) -> DeltaPlan:
        """This plan with ``names`` no longer applied (nor rejected)."""
        dropped = set(names)
        return replace(self, apply={n: v for n, v in self.apply.items() if n not in dropped})

    def outcome(self, applied: Iterable[str], refused: Mapping[str, str]) -> DeltaPlan:
        """What became of it: only ``applied`` names applied, ``refused`` ones rejected."""
        kept = set(applied)
        return replace(
            self,
            apply={n: v for n, v in self.apply.items() if n in kept},
            rejected={**self.rejected, **refused},
        )


@dataclass(frozen=True)
class ShadowUpdate:
    """The body of one update request, before a clientToken is attached."""

    reported: dict[str, JsonValue]
    desired: dict[str, None] | None = None
    version: int | None = None
    timestamp_ms: int | None = None
    # clear_desired "section": the whole desired section goes ("desired": null), not the keys
    clear_section: bool = False

    def to_payload(self, client_token: str) -> dict[str, Any]:
        state: dict[str, Any] = {"reported": self.reported}
        if self.clear_section and self.desired:
            state["desired"] = None
        elif self.desired:
            state["desired"] = self.desired
        payload: dict[str, Any] = {"state": state, "clientToken": client_token}
        if self.version is not None:
            payload["version"] = self.version
        if self.timestamp_ms is not None:
            payload["timestamp"] = self.timestamp_ms
        return payload


class Reconciler:
    """Decides what a delta means for the devices, and tracks shadow version and errors.

    Versions: a fetched document (or the acceptance of our own update) is trusted and sets the
    version floor outright; a delta only raises it until the next fetch. A delta below the floor
    is stale, and the caller fetches the document, so a forged delta with a huge version costs
    one fetch, never every later delta.
    """

    def __init__(
        self, codecs: Mapping[str, ValueCodec], *, reason_chars: int = ERROR_REASON_CHARS
    ) -> None:
        self._codecs = dict(codecs)
        self._reason_chars = reason_chars
        self.newest_version = -1
        self.errors: dict[str, str] = {}  # name -> reason, mirrored in reported.gateway.errors
        # Desired keys naming no device (insertion-ordered, capped), and what was last reported.
        self.unknown: dict[str, None] = {}
        self._unknown_reported: JsonValue = None

    def reason(self, text: str) -> str:
        """An error reason cut to the length every device's entry may have."""
        return text[: self._reason_chars]

    def observe_version(self, version: int) -> None:
        """The version of an update of ours the service accepted."""
        self.newest_version = max(self.newest_version, version)

    def observe_document(self, version: int) -> None:
        """A fetched document: its version is the truth now, whatever deltas claimed before."""
        self.newest_version = version

    def plan(
        self, delta: Mapping[str, Any], version: int, *, from_document: bool = False
    ) -> DeltaPlan:
        """Validate every key of ``delta``; a delta older than the newest seen is stale."""
        if not from_document and version < self.newest_version:
            return DeltaPlan(version=version, stale=True)
        self.observe_version(version)
        apply: dict[str, NativeValue] = {}
        rejected: dict[str, str] = {}
        unknown: list[str] = []
        for name, value in delta.items():
            if name == GATEWAY_KEY:
                continue  # the gateway's own status section is not a device
            codec = self._codecs.get(name)
            if codec is None:
                unknown.append(name)
                continue
            try:
                apply[name] = codec.parse_desired(value)
            except DeviceValueError as exc:
                rejected[name] = self.reason(str(exc))
        if from_document:
            self.unknown.clear()  # the document's delta lists every unknown key still desired
        for name in unknown:
            if len(self.unknown) >= MAX_UNKNOWN_TRACKED:
                break
            self.unknown[name] = None
        return DeltaPlan(version=version, apply=apply, rejected=rejected, unknown=tuple(unknown))

    def unknown_summary(self) -> JsonValue:
        """``reported.gateway.unknown_keys``: bounded, or None when no unknown key is desired."""
        if not self.unknown:
            return None
        count = len(self.unknown)
        shown = list(self.unknown)[:MAX_UNKNOWN_NAMES_SHOWN]
        names = [name[:MAX_UNKNOWN_NAME_CHARS] for name in shown]
        summary: dict[str, JsonValue] = {
            "count": count if count < MAX_UNKNOWN_TRACKED else f"{MAX_UNKNOWN_TRACKED}+",
            "names": names,
            "reason": UNKNOWN_REASON,
        }
        return summary

    def unknown_change(self) -> tuple[bool, JsonValue]:
        """Whether the unknown-key summary changed since last reported, and its new value."""
        summary = self.unknown_summary()
        if summary == self._unknown_reported:
            return False, summary
        self._unknown_reported = summary
        return True, summary

    def restore_plan(
        self, reported: Mapping[str, Any], names: Iterable[str]
    ) -> dict[str, NativeValue]:
        """Values to restore at start from the last reported state (invalid ones are skipped)."""
        restored: dict[str, NativeValue] = {}
        for name in names:
            codec = self._codecs.get(name)
            if codec is None or name not in reported:
                continue
            try:
                restored[name] = codec.parse_desired(reported[name])
            except DeviceValueError:
                continue
        return restored

    def error_changes(self, plan: DeltaPlan) -> dict[str, str | None]:
        """Update the error table; returns the changes for ``reported.gateway.errors``.

        A name with a new reason is set; a name that had an error and now got a valid value is
        set to null, which deletes it from the shadow.
        """
        changes: dict[str, str | None] = {}
        for name in plan.apply:
            if self.errors.pop(name, None) is not None:
                changes[name] = None
        for name, reason in plan.rejected.items():
            if self.errors.get(name) != reason:
                self.errors[name] = reason
                changes[name] = reason
        return changes

    def build_update(
        self,
        plan: DeltaPlan,
        applied: Mapping[str, JsonValue],
        *,
        clear_desired: bool | str,
        timestamp_ms: int | None = None,
        extra_reported: Mapping[str, JsonValue] | None = None,
    ) -> ShadowUpdate | None:
        """The one update answering ``plan``: read-back values, error changes, desired clears.

        With ``clear_desired`` the update carries the delta's version, so a desired value
        written meanwhile is not wiped: the service answers 409 instead and we fetch again.
        ``"section"`` sends ``"desired": null`` instead of one null per applied key: it also
        wipes the desired keys that were refused or name no device.
        """
        reported: dict[str, JsonValue] = dict(extra_reported or {})
        reported.update(applied)
        error_changes = self.error_changes(plan)
        unknown_changed, unknown = self.unknown_change()
        if error_changes or unknown_changed:
            status = reported.get(GATEWAY_KEY)
            section: dict[str, JsonValue] = dict(status) if isinstance(status, dict) else {}
            if error_changes:
                errors = section.get("errors")
                known = errors if isinstance(errors, dict) else {}
                section["errors"] = {**known, **error_changes}
            if unknown_changed:
                section[UNKNOWN_KEYS_KEY] = unknown
            reported[GATEWAY_KEY] = section
        if not reported and not (clear_desired and applied):
            return None
        if clear_desired and applied:
            return ShadowUpdate(
                reported=reported,
                desired=dict.fromkeys(applied),
                version=plan.version,
                timestamp_ms=timestamp_ms,
                clear_section=clear_desired == "section",
            )
        return ShadowUpdate(reported=reported, timestamp_ms=timestamp_ms)


def merge_reported(
    older: Mapping[str, JsonValue], newer: Mapping[str, JsonValue]
) -> dict[str, JsonValue]:
    """Two reported sections as one: newer values win, nested objects merge key by key (as
    the shadow service merges them), so sending the result equals sending both in order."""
    merged: dict[str, JsonValue] = dict(older)
    for key, value in newer.items():
        previous = merged.get(key)
        if isinstance(value, dict) and isinstance(previous, dict):
            merged[key] = merge_reported(previous, value)
        else:
            merged[key] = value
    return merged


def merge_updates(older: ShadowUpdate, newer: ShadowUpdate) -> ShadowUpdate:
    """One update carrying both (the older one not yet sent).

    Desired clears are united and carry the newer delta's version: every key of the older one
    was applied from a delta no later than the newer one, so clearing it at the newer version is
    as safe as clearing it at its own (and a desired write since makes the service answer 409).
    """
    desired = {**(older.desired or {}), **(newer.desired or {})}
    return ShadowUpdate(
        reported=merge_reported(older.reported, newer.reported),
        desired=desired or None,
        version=newer.version if newer.version is not None else older.version,
        timestamp_ms=newer.timestamp_ms if newer.timestamp_ms is not None else older.timestamp_ms,
        clear_section=older.clear_section or newer.clear_section,
    )


class FailsafeMemory:
    """Outputs driven to their fail-safe value during an outage, each with the cloud time
    after which a desired value for it counts as fresh: an older one is not applied again."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self._since)

    def remember(self, name: str, cloud_time: float) -> None:
        self._since[name] = cloud_time

    def filter_delta(self, plan: DeltaPlan, *, caused_by_us: bool) -> tuple[DeltaPlan, list[str]]:
        """A delta our own report caused (it carries our clientToken) only repeats the desired
        value from before the outage: the fail-safe value holds. Anyone else's is fresh.
        Returns the plan and the names held at their fail-safe value."""
        held = [name for name in plan.apply if name in self._since]
        if not caused_by_us:
            for name in held:
                del self._since[name]
            return plan, []
        return plan.without(held), held

    def filter_document(
        self, plan: DeltaPlan, desired_since: Callable[[str], float | None]
    ) -> tuple[DeltaPlan, list[str]]:
        """A desired value set during the outage is fresh; an older one is not re-applied."""
        held = []
        for name in [name for name in plan.apply if name in self._since]:
            stamp = desired_since(name)
            if stamp is not None and stamp > self._since[name]:
                del self._since[name]  # set during the outage: fresh
            else:
                held.append(name)
        return plan.without(held), held


class Coalescer:
    """Batches reported changes so at most one update goes out per ``interval_s``.

    The first change after a quiet period is due at once (lowest latency); changes inside the
    window wait for its end. Last value per key wins, so the final value is never lost.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._pending: dict[str, JsonValue] = {}
        self._observed_at: float | None = None  # wall-clock epoch of the newest change
        self._last_flush: float | None = None  # monotonic time of the last take()

    def add(self, name: str, value: JsonValue, observed_at: float) -> None:
        self._pending[name] = value
        self._observed_at = (
            observed_at if self._observed_at is None else max(self._observed_at, observed_at)
        )

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def due_in(self, now: float) -> float | None:
        """Seconds until a flush is allowed (0 = now), or None if nothing is pending."""
        if not self._pending:
            return None
        if self._last_flush is None:
            return 0.0
        return max(0.0, self._last_flush + self.interval_s - now)

    def take(self, now: float) -> tuple[dict[str, JsonValue], float | None]:
        """The pending batch and its newest observation time; starts a new window."""
        batch, observed_at = self._pending, self._observed_at
        self._pending, self._observed_at = {}, None
        self._last_flush = now
        return batch, observed_at

    def put_back(self, batch: Mapping[str, JsonValue], observed_at: float | None) -> None:
        """Return a batch that could not be sent; newer values already pending win."""
        for name, value in batch.items():
            self._pending.setdefault(name, value)
        if observed_at is not None and self._observed_at is None:
            self._observed_at = observed_at


class RateLimiter:
    """Token bucket: at most ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None

    def delay(self, now: float) -> float:
        """Seconds to wait before the next request may go; takes a token when it returns 0."""
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class ClientTokens:
    """Unique clientTokens (at most 64 bytes) so replies can be matched to requests."""

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(4).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        token = f"eg-{self._prefix}-{next(self._counter)}"
        return token[-MAX_CLIENT_TOKEN_BYTES:]

    def is_ours(self, token: str | None) -> bool:
        """Whether ``token`` came from this process (AWS echoes it in the replies it causes)."""
        return token is not None and token.startswith(f"eg-{self._prefix}-")
