"""The reconciler's memory of refused desired values (pure): a refusal counts once per key and
value, and ends when the key is applied, set to null, equals reported, or leaves desired."""

from __future__ import annotations

from gateway.config import BinaryOutputConfig, PwmOutputConfig
from gateway.core.values import codec_for
from gateway.links.shadow.reconcile import Reconciler, refusals

CODECS = {
    "led": codec_for(BinaryOutputConfig(type="LED", pin=17)),
    "fan": codec_for(PwmOutputConfig(type="PWMLED", pin=18)),
}


def refuse(reconciler: Reconciler, delta: dict[str, object], version: int) -> list[str]:
    """Plan ``delta`` and error-track it as the link does; the refusals that count."""
    plan = reconciler.plan(delta, version)
    rejected, unknown = reconciler.first_refusals(plan)
    reconciler.error_changes(plan)
    return [*rejected, *unknown]


def test_the_same_value_refused_again_does_not_count() -> None:
    reconciler = Reconciler(CODECS)
    assert refuse(reconciler, {"led": "maybe", "junk": 1}, 1) == ["led", "junk"]
    assert refuse(reconciler, {"led": "maybe", "junk": 1}, 2) == []


def test_another_bad_value_of_the_same_key_counts() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"fan": 7}, 1)
    assert refuse(reconciler, {"fan": 8}, 2) == ["fan"]


def test_an_applied_value_ends_the_memory() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"led": "maybe"}, 1)
    refuse(reconciler, {"led": True}, 2)
    assert refuse(reconciler, {"led": "maybe"}, 3) == ["led"]


def test_a_key_set_to_null_clears_its_error_and_unknown_entry() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"led": "maybe", "junk": 1}, 1)
    reconciler.unknown_change()  # reported once
    changes = reconciler.undesired_changes({"led": None, "junk": None}, {"led": False})
    assert changes == {"gateway": {"errors": {"led": None}, "unknown_keys": None}}
    assert not reconciler.errors and not reconciler.unknown


def test_a_desired_value_equal_to_reported_clears_the_error() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"led": "maybe"}, 1)
    changes = reconciler.undesired_changes({"led": False}, {"led": False})
    assert changes == {"gateway": {"errors": {"led": None}}}


def test_another_desired_key_changes_nothing() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"led": "maybe"}, 1)
    assert reconciler.undesired_changes({"fan": 0.5}, {"led": False, "fan": 0.0}) == {}
    assert "led" in reconciler.errors


def test_deleting_the_desired_section_clears_everything() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"led": "maybe", "fan": 7}, 1)
    changes = reconciler.undesired_changes(None, {})
    assert changes == {"gateway": {"errors": {"led": None, "fan": None}}}


def test_a_document_without_the_key_forgets_its_refusal() -> None:
    reconciler = Reconciler(CODECS)
    refuse(reconciler, {"led": "maybe"}, 1)
    reconciler.plan({}, 5, from_document=True)
    assert "led" not in reconciler.errors
    assert refuse(reconciler, {"led": "maybe"}, 6) == ["led"]


def test_refusals_give_the_links_reasons_for_a_client() -> None:
    reasons = refusals(CODECS, {"led": "maybe", "fan": 0.5, "nosuch": 1})
    assert set(reasons) == {"led", "nosuch"}
    assert reasons["led"] == "expected true or false, got string 'maybe'"
