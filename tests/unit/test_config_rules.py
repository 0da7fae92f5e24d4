"""A config model (``gateway.config.rules.model``) behaves as a frozen, keyword-only dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config.rules import model
from gateway.config.schema import GatewayConfig, ReconnectConfig, ShadowConfig


@model
class _Window:
    start: int
    end: int = 10
    tags: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError("start must not exceed end")


def test_a_model_takes_keywords_and_fills_defaults_and_factories() -> None:
    first, second = _Window(start=1), _Window(start=1)
    assert (first.start, first.end, first.tags) == (1, 10, [])
    assert first.tags is not second.tags  # a fresh list each time


def test_a_model_refuses_a_missing_or_unknown_keyword() -> None:
    with pytest.raises(TypeError, match="'start'"):
        _Window()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="stop"):
        _Window(start=1, stop=2)  # type: ignore[call-arg]


def test_a_model_runs_its_checks_after_init() -> None:
    with pytest.raises(ValueError, match="start must not exceed end"):
        _Window(start=11)


def test_a_model_is_frozen() -> None:
    window = _Window(start=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        window.start = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del window.end  # type: ignore[misc]


def test_models_compare_and_hash_by_their_fields_and_type() -> None:
    assert ReconnectConfig(min_s=2) == ReconnectConfig(min_s=2.0)
    assert hash(ReconnectConfig(min_s=2)) == hash(ReconnectConfig(min_s=2))
    assert ReconnectConfig(min_s=2) != ReconnectConfig(min_s=3)
    assert ShadowConfig() != ReconnectConfig()  # other types are never equal


def test_a_model_shows_its_fields_as_a_dataclass_does() -> None:
    assert repr(ReconnectConfig(min_s=2)) == (
        "ReconnectConfig(min_s=2, max_s=120.0, reset_after_s=60.0)"
    )


def test_the_dataclass_tools_work_on_models() -> None:
    config = GatewayConfig(thing="pi-1")
    assert [field.name for field in dataclasses.fields(config)][:3] == ["thing", "shadow", "mqtt"]
    changed = dataclasses.replace(config, thing="pi-2")
    assert changed.thing == "pi-2" and changed.shadow == config.shadow
    assert dataclasses.asdict(ReconnectConfig()) == {
        "min_s": 1.0,
        "max_s": 120.0,
        "reset_after_s": 60.0,
    }
    with pytest.raises(ValueError, match="min_s must not exceed max_s"):
        dataclasses.replace(ReconnectConfig(), min_s=500)
