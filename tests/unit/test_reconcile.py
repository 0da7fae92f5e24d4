"""Reconciliation decisions, property-based: every delta key is applied or rejected, never both."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import BinaryOutputConfig, DigitalInputConfig, PwmOutputConfig
from gateway.core.values import codec_for
from gateway.devices.sensors import sensor_changed
from gateway.links.shadow.reconcile import (
    GATEWAY_KEY,
    ClientTokens,
    Coalescer,
    RateLimiter,
    Reconciler,
)

CODECS = {
    "led": codec_for(BinaryOutputConfig(type="LED", pin=17)),
    "fan": codec_for(PwmOutputConfig(type="PWMLED", pin=18)),
    "button": codec_for(DigitalInputConfig(type="Button", pin=4)),
}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
names = st.sampled_from(["led", "fan", "button", "unknown", "gateway"])
deltas = st.dictionaries(names, json_values | st.booleans() | st.floats(0, 1), max_size=5)


@given(deltas, st.integers(min_value=0, max_value=10**6))
def test_every_delta_key_is_applied_rejected_or_unknown_exactly_once(
    delta: dict[str, Any], version: int
) -> None:
    plan = Reconciler(CODECS).plan(delta, version)
    assert not plan.stale
    assert set(plan.apply).isdisjoint(plan.rejected)
    assert set(plan.unknown).isdisjoint(set(plan.apply) | set(plan.rejected))
    assert set(plan.apply) | set(plan.rejected) | set(plan.unknown) == set(delta) - {GATEWAY_KEY}


@given(deltas, st.integers(min_value=0, max_value=10**6))
def test_applied_values_are_exactly_what_the_codec_accepts(
    delta: dict[str, Any], version: int
) -> None:
    plan = Reconciler(CODECS).plan(delta, version)
    for name, value in plan.apply.items():
        assert CODECS[name].parse_desired(delta[name]) == value


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=10**6))
def test_a_delta_older_than_the_newest_seen_is_stale(newest: int, back: int) -> None:
    reconciler = Reconciler(CODECS)
    reconciler.observe_version(newest)
    plan = reconciler.plan({"led": True}, newest - back)
    assert plan.stale and not plan.apply


def test_a_delta_of_the_newest_version_is_applied() -> None:
    reconciler = Reconciler(CODECS)
    reconciler.observe_version(7)
    assert reconciler.plan({"led": True}, 7).apply == {"led": True}


def test_inputs_unknown_names_and_bad_types_are_rejected_with_reasons() -> None:
    plan = Reconciler(CODECS).plan({"button": True, "nope": 1, "fan": "fast"}, 3)
    assert "read-only" in plan.rejected["button"]
    assert plan.unknown == ("nope",)
    assert "expected a number" in plan.rejected["fan"]


def test_update_clears_applied_desired_keys_with_the_delta_version() -> None:
    reconciler = Reconciler(CODECS)
    plan = reconciler.plan({"led": True, "fan": 2}, 12)
    update = reconciler.build_update(plan, {"led": True}, clear_desired=True)
    assert update is not None
    payload = update.to_payload("tok")
    assert payload["version"] == 12
    assert payload["state"]["desired"] == {"led": None}  # the invalid fan value stays desired
    assert payload["state"]["reported"]["led"] is True
    assert "fan" in payload["state"]["reported"][GATEWAY_KEY]["errors"]


def test_update_without_clear_desired_carries_no_version() -> None:
    reconciler = Reconciler(CODECS)
    plan = reconciler.plan({"led": True}, 12)
    update = reconciler.build_update(plan, {"led": True}, clear_desired=False)
    assert update is not None
    payload = update.to_payload("tok")
    assert "version" not in payload and "desired" not in payload["state"]


def test_an_error_is_cleared_once_a_valid_value_arrives() -> None:
    reconciler = Reconciler(CODECS)
    reconciler.build_update(reconciler.plan({"fan": 5}, 1), {}, clear_desired=True)
    assert "fan" in reconciler.errors
    update = reconciler.build_update(
        reconciler.plan({"fan": 0.5}, 2), {"fan": 0.5}, clear_desired=True
    )
    assert update is not None
    assert update.reported[GATEWAY_KEY] == {"errors": {"fan": None}}
    assert reconciler.errors == {}


def test_a_repeated_error_is_not_reported_again() -> None:
    reconciler = Reconciler(CODECS)
    reconciler.build_update(reconciler.plan({"fan": 5}, 1), {}, clear_desired=True)
    assert reconciler.build_update(reconciler.plan({"fan": 5}, 2), {}, clear_desired=True) is None


def test_restore_plan_skips_values_that_are_no_longer_valid() -> None:
    restored = Reconciler(CODECS).restore_plan({"led": True, "fan": 7}, ["led", "fan"])
    assert restored == {"led": True}


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(), st.floats(min_value=0, max_value=0.2)),
        min_size=1,
        max_size=40,
    )
)
def test_coalescer_never_loses_the_final_value_and_respects_the_interval(
    events: list[tuple[str, int, float]],
) -> None:
    coalescer = Coalescer(0.05)
    now = 0.0
    last_sent: dict[str, int] = {}
    flush_times: list[float] = []

    def flush_if_due() -> None:
        due = coalescer.due_in(now)
        if due == 0.0:
            batch, _ = coalescer.take(now)
            flush_times.append(now)
            last_sent.update(batch)  # type: ignore[arg-type]

    expected: dict[str, int] = {}
    for name, value, gap in events:
        now += gap
        flush_if_due()
        coalescer.add(name, value, observed_at=now)
        expected[name] = value
        flush_if_due()
    while coalescer.pending:
        due = coalescer.due_in(now)
        assert due is not None
        now += due
        flush_if_due()
    assert last_sent == expected
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(flush_times))


def test_coalescer_first_change_after_quiet_is_due_immediately() -> None:
    coalescer = Coalescer(0.05)
    coalescer.add("button", True, observed_at=1.0)
    assert coalescer.due_in(100.0) == 0.0


def test_coalescer_put_back_does_not_overwrite_newer_values() -> None:
    coalescer = Coalescer(0.05)
    coalescer.add("button", True, observed_at=1.0)
    batch, at = coalescer.take(0.0)
    coalescer.add("button", False, observed_at=2.0)
    coalescer.put_back(batch, at)
    assert coalescer.take(1.0)[0] == {"button": False}


def test_rate_limiter_allows_a_burst_then_paces_to_the_rate() -> None:
    limiter = RateLimiter(rate=20, burst=10)
    assert [limiter.delay(0.0) for _ in range(10)] == [0.0] * 10
    assert limiter.delay(0.0) == 0.05
    assert limiter.delay(0.05) == 0.0


def test_client_tokens_are_unique_and_short() -> None:
    tokens = ClientTokens("x" * 100)
    issued = [tokens.next() for _ in range(1000)]
    assert len(set(issued)) == 1000
    assert all(len(token.encode()) <= 64 for token in issued)


def test_sensor_changed_honours_min_change() -> None:
    assert sensor_changed(None, 45.0, 0.5)
    assert not sensor_changed(45.0, 45.3, 0.5)
    assert sensor_changed(45.0, 45.5, 0.5)
    assert not sensor_changed(45.0, 45.0, 0.0)
