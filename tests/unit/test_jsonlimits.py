"""The one nesting scanner every decoder of outside input uses."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.jsonlimits import json_depth, nests_deeper_than

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(json_values)
def test_depth_of_any_json_text_is_its_nesting_with_brackets_in_strings_ignored(
    value: Any,
) -> None:
    assert json_depth(json.dumps(value).encode()) == depth(value)


@given(json_values, st.integers(min_value=0, max_value=6))
def test_deeper_than_agrees_with_the_depth(value: Any, limit: int) -> None:
    raw = json.dumps(value).encode()
    assert nests_deeper_than(raw, limit) == (depth(value) > limit)


def test_a_hostile_depth_is_counted_only_just_past_the_limit() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    assert json_depth(raw, limit=8) == 9
    assert nests_deeper_than(raw, 8)


def test_unclosed_brackets_count_as_levels() -> None:
    assert json_depth(b"[[[") == 3
    assert nests_deeper_than(b'{"a": [[[[[[[[[', 6)
