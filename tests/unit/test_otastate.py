"""Update bookkeeping: begin, commit, roll back, the start-up decision and the start guard."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.updates.checkin import Attempt
from gateway.updates.otastate import (
    MAX_STARTS,
    ROLLED_BACK_KEPT,
    OtaState,
    Outcome,
    Pending,
    begin,
    commit,
    guard,
    on_start,
    other_slot,
    record,
    roll_back,
)

SUM = "ab" * 32


def pending_state() -> OtaState:
    return begin(OtaState(), slot="b", previous="a", version="2.0", checksum=SUM, now=1000.0)


def test_slots_alternate() -> None:
    assert other_slot("a") == "b" and other_slot("b") == "a"


def test_commit_keeps_the_new_version() -> None:
    state = commit(pending_state())
    assert state.pending is None and state.last == Outcome("applied", "2.0")
    assert state.rolled_back == ()


def test_roll_back_remembers_the_artifact() -> None:
    state = roll_back(pending_state(), "not healthy")
    assert state.pending is None
    assert state.rolled_back == (Attempt("2.0", SUM),)
    assert state.last == Outcome("rolled_back", "2.0", "not healthy")


def test_start_decision() -> None:
    state = pending_state()
    assert on_start(state, current_slot="b", running_version="2.0") == "watch"
    assert on_start(state, current_slot="b", running_version="1.0") == "roll_back"
    assert on_start(state, current_slot="a", running_version="1.0") == "none"
    assert on_start(OtaState(), current_slot="a", running_version="1.0") == "none"


def test_guard_counts_starts_then_rolls_back() -> None:
    state = pending_state()
    for expected in range(1, MAX_STARTS + 1):
        state, action = guard(state, current_slot="b", now=1001.0, health_timeout_s=300)
        assert action == "count" and state.pending is not None
        assert state.pending.starts == expected
    state, action = guard(state, current_slot="b", now=1001.0, health_timeout_s=300)
    assert action == "roll_back" and state.pending is None
    assert state.rolled_back == (Attempt("2.0", SUM),)


def test_guard_rolls_back_long_after_the_deadline_and_ignores_committed_state() -> None:
    _, action = guard(pending_state(), current_slot="b", now=1000 + 661, health_timeout_s=300)
    assert action == "roll_back"
    assert guard(commit(pending_state()), current_slot="b", now=0, health_timeout_s=1)[1] == "none"


def test_rolled_back_list_is_bounded_and_unique() -> None:
    state = OtaState()
    for index in range(ROLLED_BACK_KEPT + 5):
        version = f"2.{index % (ROLLED_BACK_KEPT + 2)}"
        state = roll_back(
            begin(state, slot="b", previous="a", version=version, checksum=SUM, now=0), "x"
        )
    assert len(state.rolled_back) == ROLLED_BACK_KEPT
    assert len(set(state.rolled_back)) == ROLLED_BACK_KEPT


text = st.text(min_size=1, max_size=20)
states = st.builds(
    OtaState,
    pending=st.none()
    | st.builds(
        Pending,
        st.sampled_from("ab"),
        st.sampled_from("ab"),
        text,
        text,
        st.floats(0, 2e9),
        st.integers(0, 9),
    ),
    rolled_back=st.lists(st.builds(Attempt, text, text), max_size=3).map(tuple),
    last=st.none()
    | st.builds(
        Outcome, st.sampled_from(["applied", "failed", "rolled_back"]), text, st.none() | text
    ),
    installed=st.none() | st.builds(Attempt, text, text),
    extra=st.dictionaries(st.sampled_from(["future", "other"]), st.integers()),
)


@given(states)
def test_state_survives_a_round_trip_through_json(state: OtaState) -> None:
    assert OtaState.loads(state.dumps()) == state


def test_a_command_update_records_what_is_installed() -> None:
    state = record(OtaState(), Outcome("applied", "fw-2"), installed=Attempt("fw-2", SUM))
    assert OtaState.loads(state.dumps()).installed == Attempt("fw-2", SUM)
    failed = record(state, Outcome("failed", "fw-3", "boom"))
    assert failed.installed == Attempt("fw-2", SUM)
