"""Local device rules, pure: interlocks and follows. No I/O; the device core (``engine``)
applies the results.

Interlocks: outputs in a group are never active at the same time. A set of changes that would
leave two of them active is refused for the outputs it would switch on (their pins stay as they
are), and every accepted change is ordered off-before-on, so no instant has both active.

Follows: an on/off output mirrors another device (or its inverse, or toggles on each press),
decided on the device itself, so a wall switch keeps working with the network down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.core.values import is_active


@dataclass(frozen=True)
class Interlocks:
    groups: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, groups: Iterable[Iterable[str]]) -> Interlocks:
        return cls(tuple(tuple(group) for group in groups))

    def refused(
        self, current: Mapping[str, object], changes: Mapping[str, object]
    ) -> dict[str, str]:
        """Changes to refuse (name -> reason) so that no group ends with two active outputs."""
        after = {name: is_active(value) for name, value in current.items()}
        after.update({name: is_active(value) for name, value in changes.items()})
        refused: dict[str, str] = {}
        for group in self.groups:
            active = [name for name in group if after.get(name)]
            if len(active) < 2:
                continue
            for name in active:
                if name in changes and is_active(changes[name]):
                    others = ", ".join(other for other in active if other != name)
                    refused[name] = f"interlock: would be active together with {others}"
        return refused

    @staticmethod
    def ordered(changes: Mapping[str, object]) -> list[str]:
        """Names in switching order: everything that turns off before anything that turns on."""
        return sorted(changes, key=lambda name: is_active(changes[name]))


@dataclass(frozen=True)
class Follow:
    follower: str
    source: str
    mode: str  # mirror | invert | toggle


@dataclass(frozen=True)
class FollowRules:
    follows: tuple[Follow, ...] = ()

    def reactions(
        self, source: str, active: bool, current: Mapping[str, object]
    ) -> dict[str, bool]:
        """New follower values after ``source`` became ``active`` (True) or inactive."""
        reactions: dict[str, bool] = {}
        for follow in self.follows:
            if follow.source != source:
                continue
            if follow.mode == "mirror":
                reactions[follow.follower] = active
            elif follow.mode == "invert":
                reactions[follow.follower] = not active
            elif active:  # toggle: each press (inactive -> active) flips the follower
                reactions[follow.follower] = not is_active(current.get(follow.follower))
        return reactions


@dataclass(frozen=True)
class Behaviours:
    """Everything beyond "pin = desired value" that the device core enforces, from the config."""

    interlocks: Interlocks = Interlocks()
    follows: FollowRules = FollowRules()
    pulses_s: Mapping[str, float] = field(default_factory=dict)
    # name -> (seconds the link must be down, value to drive), in device terms
    failsafe: Mapping[str, tuple[float, object]] = field(default_factory=dict)
