"""AWS IoT Device Shadow MQTT topic names for one thing and shadow (classic or named)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reply(Enum):
    """The shadow service's reply topics the gateway subscribes to."""

    UPDATE_DELTA = "update/delta"
    UPDATE_ACCEPTED = "update/accepted"
    UPDATE_REJECTED = "update/rejected"
    GET_ACCEPTED = "get/accepted"
    GET_REJECTED = "get/rejected"


@dataclass(frozen=True)
class ShadowTopics:
    thing: str
    shadow_name: str | None = None

    @property
    def prefix(self) -> str:
        base = f"$aws/things/{self.thing}/shadow"
        return f"{base}/name/{self.shadow_name}" if self.shadow_name else base

    @property
    def update(self) -> str:
        return f"{self.prefix}/update"

    @property
    def get(self) -> str:
        return f"{self.prefix}/get"

    def reply(self, kind: Reply) -> str:
        return f"{self.prefix}/{kind.value}"

    @property
    def subscriptions(self) -> list[str]:
        return [self.reply(kind) for kind in Reply]

    def classify(self, topic: str) -> Reply | None:
        """Which reply ``topic`` is, or None if it is not one of ours."""
        prefix = self.prefix + "/"
        if not topic.startswith(prefix):
            return None
        try:
            return Reply(topic[len(prefix) :])
        except ValueError:
            return None
