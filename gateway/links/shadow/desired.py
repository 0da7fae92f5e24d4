"""Inbound on the shadow link: replies and deltas become plans, plans become device values
and one update each.

A delta below the trusted version is stale (the document is fetched instead); a fetched
document is trusted: its version resets the floor, its ``reported`` is compared with the
devices (after a connect everything is reported), and its delta is applied. Outputs to restore
are restored from the first document; a fail-safe value holds against desired values older
than the outage. Desired values go to the device core, and one update answers each plan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from gateway.core.outbox import OutboxWriter
from gateway.core.ports import Clock, DeviceCore, EngineListener, InboundMessage
from gateway.core.values import JsonValue
from gateway.links.shadow.messages import (
    DeltaMessage,
    ErrorReply,
    PayloadError,
    ShadowDocument,
    UpdateAccepted,
    parse_reply,
)
from gateway.links.shadow.protocol import ShadowProtocol, ShadowRequest
from gateway.links.shadow.reconcile import DeltaPlan, FailsafeMemory, Reconciler, ShadowUpdate
from gateway.links.shadow.report import drift, error_names, has_unknown_summary
from gateway.links.shadow.settings import ShadowLinkSettings
from gateway.links.shadow.topics import ShadowTopics

log = structlog.get_logger()


class ShadowLinkState(EngineListener, Protocol):
    """What the inbound side reads and drives on the link (``ShadowSync``); it is the device
    core's listener, and names itself as the origin of what it applies."""

    engine: DeviceCore
    protocol: ShadowProtocol
    reconciler: Reconciler
    topics: ShadowTopics
    settings: ShadowLinkSettings
    writer: OutboxWriter | None
    counters: dict[str, int]
    synced: asyncio.Event
    connected: bool
    stopping: bool
    first_get_in_session: bool

    @property
    def values(self) -> dict[str, JsonValue]: ...

    def full_reported(
        self, stale_errors: frozenset[str] = frozenset(), *, stale_unknown: bool = False
    ) -> dict[str, JsonValue]: ...

    def timestamp(self, observed_at: float | None) -> int | None: ...

    def enqueue_update(
        self,
        update: ShadowUpdate,
        *,
        batch: dict[str, JsonValue] | None = None,
        observed_at: float | None = None,
    ) -> ShadowRequest: ...


class DesiredSync:
    """Replies and deltas in, device values and updates out, for one link."""

    def __init__(self, link: ShadowLinkState, clock: Clock = time.time) -> None:
        self._link = link
        self._clock = clock
        self._last_cloud_time: float | None = None  # the shadow service's clock, from replies
        self.reset()

    def reset(self) -> None:
        """A new configuration: restore again from the next document, forget held values."""
        self._restored = False  # outputs to restore are restored from the next document
        self._deferred_versions: dict[str, int] = {}  # held back by min_interval: its version
        self._failsafed = FailsafeMemory()

    def on_failsafe(self, name: str) -> None:
        """Desired values set before now (cloud clock) are not applied again after the outage."""
        cutoff = self._last_cloud_time if self._last_cloud_time is not None else self._clock()
        self._failsafed.remember(name, cutoff)

    def on_deferred_applied(self, name: str, value: JsonValue) -> None:
        """A desired value held back by min_interval is on the device now: report (and clear)
        it like any applied desired value; without a session the next fetch reconciles it."""
        version = self._deferred_versions.pop(name, self._link.reconciler.newest_version)
        if self._link.stopping or not self._link.connected:
            return
        log.info("desired_applied", device=name, value=value, version=version)
        self._link.counters["deltas_applied"] += 1
        plan = DeltaPlan(version=version, apply={name: True})  # only the key counts here
        update = self._link.reconciler.build_update(
            plan,
            {name: value},
            clear_desired=self._link.settings.shadow.clear_desired,
            timestamp_ms=self._link.timestamp(None),
        )
        if update is not None:
            self._link.enqueue_update(update)

    def on_deferred_dropped(self, name: str) -> None:
        """A held-back desired value will not land (another link's value replaced it, which
        arrives as a change and is reported as one; or it was refused when its turn came):
        the desired value stays in the shadow, and the next document reconciles it."""
        self._deferred_versions.pop(name, None)

    def handle_message(self, message: InboundMessage) -> None:
        kind = self._link.topics.classify(message.topic)
        if kind is None:
            return
        try:
            reply = parse_reply(kind, message.payload)
        except PayloadError as exc:
            self._link.counters["messages_dropped"] += 1
            log.warning("payload_dropped", topic=message.topic, reason=exc.reason, shape=exc.shape)
            return
        if isinstance(reply.timestamp, int | float):
            self._last_cloud_time = float(reply.timestamp)
        if isinstance(reply, DeltaMessage):
            self._on_delta(reply)
        elif isinstance(reply, ShadowDocument):
            self._on_document(reply)
        elif isinstance(reply, UpdateAccepted):
            self._on_update_accepted(reply)
        elif isinstance(reply, ErrorReply):
            self._link.protocol.on_rejected(kind, reply)

    def _on_delta(self, delta: DeltaMessage) -> None:
        if self._link.stopping:
            return
        plan = self._link.reconciler.plan(delta.state, delta.version)
        if plan.stale:
            self._link.counters["deltas_stale"] += 1
            log.info(
                "delta_ignored_stale",
                version=delta.version,
                newest=self._link.reconciler.newest_version,
            )
            # The document decides: it resets the version floor (should a forged or replayed
            # delta have raised it) and carries whatever this delta wanted, if still desired.
            self._link.protocol.request_get()
            return
        if self._failsafed:
            caused_by_us = self._link.protocol.is_ours(delta.client_token)
            plan, held = self._failsafed.filter_delta(plan, caused_by_us=caused_by_us)
            _log_held(held)
        self._apply_and_report(plan, extra_reported=None)

    def _on_document(self, document: ShadowDocument) -> None:
        if self._link.protocol.answered(document.client_token) is None:
            return  # somebody else's get: not ours to trust
        self._link.reconciler.observe_document(document.version)
        if self._link.stopping:
            return
        reported = document.state.reported or {}
        if not self._restored:
            self._restore_outputs(reported, document.state.delta or {})
        plan = self._link.reconciler.plan(
            document.state.delta or {}, document.version, from_document=True
        )
        if self._failsafed:
            plan, held = self._failsafed.filter_document(plan, document.desired_timestamp)
            _log_held(held)
        if self._link.first_get_in_session:
            # After every connect, report everything: changes made while offline catch up.
            self._link.first_get_in_session = False
            extra = self._link.full_reported(
                stale_errors=error_names(reported), stale_unknown=has_unknown_summary(reported)
            )
        else:
            extra = drift(self._link.values, self._link.reconciler, reported)
            if extra:
                log.info("reported_drift_corrected", keys=sorted(extra))
        self._apply_and_report(plan, extra_reported=extra or None)
        self._link.synced.set()

    def _restore_outputs(self, reported: Mapping[str, Any], delta: Mapping[str, Any]) -> None:
        self._restored = True
        # A pending desired value wins over restoring the old reported one.
        names = [name for name in self._link.settings.restore if name not in delta]
        self._link.engine.restore(
            self._link.reconciler.restore_plan(reported, names), origin=self._link
        )

    def _apply_and_report(
        self, plan: DeltaPlan, extra_reported: dict[str, JsonValue] | None
    ) -> None:
        outcome = self._link.engine.apply(plan.apply, origin=self._link)
        for name in outcome.deferred:
            self._deferred_versions[name] = plan.version
        applied = outcome.applied
        refused = {name: self._link.reconciler.reason(why) for name, why in outcome.refused.items()}
        plan = plan.outcome(applied, refused)
        # A value refused before comes back with every delta our own report causes (AWS
        # publishes one while desired and reported differ): counted and logged once.
        rejected, unknown = self._link.reconciler.first_refusals(plan)
        self._link.counters["deltas_applied"] += len(applied)
        self._link.counters["deltas_rejected"] += len(rejected) + len(unknown)
        update = self._link.reconciler.build_update(
            plan,
            applied,
            clear_desired=self._link.settings.shadow.clear_desired,
            timestamp_ms=self._link.timestamp(None),
            extra_reported=extra_reported,
        )
        if update is not None:
            self._link.enqueue_update(update)
        # Logged once the report is on its way (often already written): not in its path.
        for name, shown in applied.items():
            log.info("desired_applied", device=name, value=shown, version=plan.version)
        for name, reason in rejected.items():
            log.warning("desired_rejected", device=name, reason=reason, version=plan.version)
        if unknown:
            # One line however many keys: a desired document full of junk must not flood logs.
            log.warning(
                "desired_unknown_keys",
                count=len(unknown),
                names=[name[:64] for name in unknown[:10]],
                version=plan.version,
            )

    def _on_update_accepted(self, accepted: UpdateAccepted) -> None:
        request = self._link.protocol.answered(accepted.client_token)
        if request is None and not self._link.stopping:
            self._on_others_update(accepted)
        if request is not None:
            self._link.reconciler.observe_version(accepted.version)  # only our own: trusted
            if request.batch and self._link.writer is not None:
                self._link.writer.delivered(request.batch)  # the outbox may forget these now

    def _on_others_update(self, accepted: UpdateAccepted) -> None:
        """Someone else's accepted update (the cloud app's): a desired key set to null, or the
        whole section deleted, ends its error or unknown-key entry (no delta says so)."""
        state = accepted.state or {}
        if "desired" not in state:
            return
        desired = state["desired"]
        if desired is not None and not isinstance(desired, dict):
            return
        changes = self._link.reconciler.undesired_changes(desired, self._link.values)
        if changes:
            log.info("desired_refusals_cleared", version=accepted.version)
            self._link.enqueue_update(ShadowUpdate(reported=changes))


def _log_held(names: list[str]) -> None:
    for name in names:
        log.info("stale_desired_not_reapplied", device=name, reason="fail-safe value kept")
