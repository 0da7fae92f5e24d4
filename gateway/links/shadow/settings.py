"""The shadow link's settings, derived from the config (``gateway.wiring.shadow_options``) and
handed over whole, at start and on every reload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import ERROR_REASON_CHARS, ShadowConfig
from gateway.core.values import ValueCodec


@dataclass(frozen=True)
class ShadowLinkSettings:
    thing: str
    shadow: ShadowConfig
    codecs: Mapping[str, ValueCodec]
    restore: frozenset[str] = frozenset()  # outputs restored from the last reported value
    event_devices: frozenset[str] = frozenset()  # inputs whose changes are also events
    events_topic: str | None = None  # default things/<thing>/events
    status_topic: str | None = None  # default things/<thing>/status
    error_reason_chars: int = ERROR_REASON_CHARS

    @property
    def events(self) -> str:
        return self.events_topic or f"things/{self.thing}/events"

    @property
    def status(self) -> str:
        return self.status_topic or f"things/{self.thing}/status"
