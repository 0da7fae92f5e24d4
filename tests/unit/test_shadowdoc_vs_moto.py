"""Differential test: ShadowStore against moto's FakeShadow as an oracle.

moto differs from AWS in known ways; those cases are kept out of the comparison:

- ``"desired": null`` / ``"reported": null`` (clear a section): moto ignores it. Not generated.
- A nested object of desired with no differing leaf: moto leaves ``{}`` for it in the delta.
  Empty objects are pruned from both deltas before comparing.
- moto resets every metadata timestamp on each update (AWS keeps per-key ones): metadata is not
  compared.
- A non-object ``desired``/``reported`` (AWS: 400): moto crashes. Not generated.
- moto compares with Python ``==`` (``true == 1``): booleans and floats are not generated, so
  equal-looking values of different JSON types never meet.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from moto.iotdata.models import FakeShadow

from gateway.devcloud.shadowdoc import ShadowStore

THING = "oracle-thing"
TOPIC = f"$aws/things/{THING}/shadow/update"

keys = st.sampled_from(["a", "b", "c", "d"])
leaves = st.integers(-2, 2) | st.text(alphabet="xy", max_size=2) | st.lists(st.integers(0, 2))
# Values of a patch: a leaf, null (delete the key), or a nested patch (merged).
values = st.recursive(
    leaves | st.none(),
    lambda inner: st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)
patches = st.dictionaries(keys, values, max_size=3)
requests = st.fixed_dictionaries(
    {},
    optional={"desired": patches, "reported": patches},
).map(lambda state: {"state": state})


def prune_empty(value: Any) -> Any:
    """Drop empty objects, recursively (moto's delta keeps ``{}`` for equal nested objects)."""
    if not isinstance(value, dict):
        return value
    pruned = {k: prune_empty(v) for k, v in value.items()}
    return {k: v for k, v in pruned.items() if v != {}}


def ours(store: ShadowStore) -> dict[str, Any]:
    doc = store.document(THING)
    assert doc is not None
    state = doc["state"]
    return {
        "desired": state.get("desired", {}),
        "reported": state.get("reported", {}),
        "delta": prune_empty(state.get("delta", {})),
        "version": doc["version"],
    }


def oracle(shadow: Any) -> dict[str, Any]:
    doc = shadow.to_dict()
    state = doc["state"]
    return {
        "desired": state.get("desired") or {},
        "reported": state.get("reported") or {},
        "delta": prune_empty(state.get("delta") or {}),
        "version": doc["version"],
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, min_size=1, max_size=6))
def test_update_sequences_match_moto(sequence: list[dict[str, Any]]) -> None:
    store = ShadowStore(clock=lambda: 1_700_000_000.0)
    shadow: Any = None
    for request in sequence:
        [accepted, *_] = store.handle(TOPIC, json.dumps(request).encode())
        assert accepted.topic.endswith("/update/accepted"), accepted.payload
        # moto stores parts of the request by reference and mutates them later: give it a copy.
        shadow = FakeShadow.create_from_previous_version(shadow, copy.deepcopy(request))
        assert ours(store) == oracle(shadow), request
