"""Device behaviours, pure: transforms, interlock rules, follow rules, and their config checks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.core.rules import Follow, FollowRules, Interlocks
from gateway.core.values import Blink, codec_for, is_active
from gateway.errors import ConfigError, DeviceValueError

HEAD = """\
thing: pi
mqtt: {host: h, ca: x, cert: x, key: x}
devices:
"""


def load(tmp_path: Path, devices: str, extra: str = "") -> object:
    (tmp_path / "x").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(devices), "  ") + extra)
    return load_config(path, codec_for=codec_for)  # as the CLI and the daemon load it


def problems(tmp_path: Path, devices: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, devices, extra)
    return caught.value.problems


# -- transforms ----------------------------------------------------------------------------------


def codec(tmp_path: Path, device: str, name: str = "d") -> object:
    config = load(tmp_path, f"{name}: {device}\n")
    return codec_for(config.devices[name])  # type: ignore[attr-defined]


def test_scale_and_offset_turn_an_adc_fraction_into_volts(tmp_path: Path) -> None:
    adc = codec(tmp_path, "{type: MCP3008, channel: 0, scale: 3.3, digits: 2}")
    assert adc.to_reported(0.5) == 1.65  # type: ignore[attr-defined]


def test_scale_and_offset_are_undone_for_desired_values(tmp_path: Path) -> None:
    fan = codec(tmp_path, "{type: PWMLED, pin: 18, scale: 100, offset: 0}")
    assert fan.parse_desired(25) == 0.25  # type: ignore[attr-defined]
    assert fan.to_reported(0.25) == 25.0  # type: ignore[attr-defined]


def test_out_of_range_after_the_inverse_transform_is_refused(tmp_path: Path) -> None:
    fan = codec(tmp_path, "{type: PWMLED, pin: 18, scale: 100}")
    with pytest.raises(DeviceValueError, match="out of range"):
        fan.parse_desired(150)  # type: ignore[attr-defined]


def test_map_reports_words_and_maps_desired_words_back(tmp_path: Path) -> None:
    valve = codec(tmp_path, "{type: OutputDevice, pin: 5, map: {true: open, false: closed}}")
    assert valve.to_reported(True) == "open"  # type: ignore[attr-defined]
    assert valve.parse_desired("closed") is False  # type: ignore[attr-defined]
    with pytest.raises(DeviceValueError, match='expected one of "open", "closed"'):
        valve.parse_desired(True)  # type: ignore[attr-defined]


def test_invert_flips_a_switch_both_ways(tmp_path: Path) -> None:
    relay = codec(tmp_path, "{type: OutputDevice, pin: 5, invert: true}")
    assert relay.to_reported(True) is False  # type: ignore[attr-defined]
    assert relay.parse_desired(True) is False  # type: ignore[attr-defined]


def test_invert_of_a_level_is_one_minus_it(tmp_path: Path) -> None:
    fan = codec(tmp_path, "{type: PWMLED, pin: 18, invert: true}")
    assert fan.to_reported(0.25) == 0.75  # type: ignore[attr-defined]
    assert fan.parse_desired(0.75) == 0.25  # type: ignore[attr-defined]


@given(st.floats(min_value=0.0, max_value=1.0), st.floats(0.5, 1000), st.floats(-100, 100))
def test_scale_offset_round_trip_for_any_level(level: float, scale: float, offset: float) -> None:
    from gateway.config import PwmOutputConfig

    fan = codec_for(PwmOutputConfig(type="PWMLED", pin=18, scale=scale, offset=offset))
    shown = fan.to_reported(level)
    assert fan.parse_desired(shown) == pytest.approx(level, abs=1e-5)


def test_a_map_that_cannot_be_undone_is_an_error_on_an_output(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "v: {type: OutputDevice, pin: 5, map: {true: on, false: on}}\n")
    assert "devices.v.map" in line and "distinct" in line


def test_the_same_map_is_fine_on_an_input(tmp_path: Path) -> None:
    load(tmp_path, "b: {type: Button, pin: 4, map: {true: pressed, false: pressed}}\n")


def test_scale_zero_is_an_error(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "f: {type: PWMLED, pin: 18, scale: 0}\n")
    assert "devices.f.scale" in line


def test_blink_object_is_accepted_by_an_led(tmp_path: Path) -> None:
    led = codec(tmp_path, "{type: LED, pin: 17}")
    value = led.parse_desired({"blink": {"on_s": 0.5, "off_s": 0.5, "n": 3}})  # type: ignore[attr-defined]
    assert value == Blink(0.5, 0.5, 3) and value.duration_s == 3.0


def test_blink_is_refused_by_a_relay(tmp_path: Path) -> None:
    relay = codec(tmp_path, "{type: OutputDevice, pin: 5}")
    with pytest.raises(DeviceValueError, match="true or false"):
        relay.parse_desired({"blink": {"on_s": 1, "off_s": 1, "n": 1}})  # type: ignore[attr-defined]


# -- config checks -------------------------------------------------------------------------------


def test_follow_of_an_unknown_device_is_an_error(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "lamp: {type: LED, pin: 17, follow: nothere}\n")
    assert "devices.lamp.follow: unknown device 'nothere'" in line


def test_a_cycle_of_follows_is_an_error(tmp_path: Path) -> None:
    [line] = problems(
        tmp_path, "a: {type: LED, pin: 17, follow: b}\nb: {type: LED, pin: 18, follow: a}\n"
    )
    assert "follows form a cycle: a -> b -> a" in line


def test_an_input_in_an_interlock_is_an_error(tmp_path: Path) -> None:
    devices = "fwd: {type: OutputDevice, pin: 5}\nbutton: {type: Button, pin: 4}\n"
    [line] = problems(tmp_path, devices, "interlock: [fwd, button]\n")
    assert "interlock.0" in line and "'button' is an input" in line


def test_an_unknown_device_in_an_interlock_is_an_error(tmp_path: Path) -> None:
    devices = "fwd: {type: OutputDevice, pin: 5}\n"
    [line] = problems(tmp_path, devices, "interlock: [fwd, rev]\n")
    assert "unknown device 'rev'" in line


def test_a_fail_safe_value_must_suit_the_device(tmp_path: Path) -> None:
    [line] = problems(
        tmp_path, "pump: {type: OutputDevice, pin: 5, on_disconnect: {after_s: 30, value: 0.5}}\n"
    )
    assert "devices.pump.on_disconnect" in line and "true or false" in line


def test_check_config_checks_fail_safe_values_with_the_value_codecs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config takes the codecs as data: the CLI must hand them over."""
    from gateway.cli.main import main

    with pytest.raises(ConfigError):
        load(tmp_path, "pump: {type: OutputDevice, pin: 5, on_shutdown: 0.5}\n")
    assert main(["check-config", "-c", str(tmp_path / "gateway.yaml")]) == 2
    assert "devices.pump.on_shutdown: expected true or false" in capsys.readouterr().err


def test_an_input_cannot_have_output_options(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "b: {type: Button, pin: 4, pulse_ms: 100}\n")
    assert "devices.b.pulse_ms: unknown key" in line


def test_interlock_accepts_one_group_or_several(tmp_path: Path) -> None:
    devices = "a: {type: LED, pin: 5}\nb: {type: LED, pin: 6}\nc: {type: LED, pin: 13}\n"
    one = load(tmp_path, devices, "interlock: [a, b]\n")
    several = load(tmp_path, devices, "interlock: [[a, b], [b, c]]\n")
    assert one.interlock_groups == [["a", "b"]]  # type: ignore[attr-defined]
    assert several.interlock_groups == [["a", "b"], ["b", "c"]]  # type: ignore[attr-defined]


# -- rules ---------------------------------------------------------------------------------------

GROUP = Interlocks.of([["fwd", "rev"]])
states = st.fixed_dictionaries({"fwd": st.booleans(), "rev": st.booleans()})
changes = st.dictionaries(st.sampled_from(["fwd", "rev"]), st.booleans() | st.floats(0, 1))


@given(states, st.lists(changes, max_size=30))
def test_interlocked_outputs_are_never_active_together_at_any_instant(
    start: dict[str, bool], batches: list[dict[str, object]]
) -> None:
    current: dict[str, object] = dict(start)
    if is_active(current["fwd"]) and is_active(current["rev"]):
        current["rev"] = False  # a valid starting point
    for batch in batches:
        refused = GROUP.refused(current, batch)
        allowed = {name: value for name, value in batch.items() if name not in refused}
        for name in GROUP.ordered(allowed):  # one pin at a time, as the gateway writes them
            current[name] = allowed[name]
            assert not (is_active(current["fwd"]) and is_active(current["rev"]))


def test_switching_direction_in_one_change_is_allowed_off_first() -> None:
    current = {"fwd": True, "rev": False}
    change = {"fwd": False, "rev": True}
    assert GROUP.refused(current, change) == {}
    assert GROUP.ordered(change) == ["fwd", "rev"]


def test_turning_on_the_second_output_is_refused_with_a_reason() -> None:
    refused = GROUP.refused({"fwd": True, "rev": False}, {"rev": True})
    assert refused == {"rev": "interlock: would be active together with fwd"}


RULES = FollowRules(
    (
        Follow("lamp", "switch", "mirror"),
        Follow("dark", "switch", "invert"),
        Follow("t", "button", "toggle"),
    )
)


def test_follow_mirror_and_invert() -> None:
    assert RULES.reactions("switch", True, {}) == {"lamp": True, "dark": False}


def test_follow_toggle_flips_on_each_press_only() -> None:
    assert RULES.reactions("button", True, {"t": False}) == {"t": True}
    assert RULES.reactions("button", True, {"t": True}) == {"t": False}
    assert RULES.reactions("button", False, {"t": True}) == {}


def readme_recipes() -> list[str]:
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = page.split("## Behaviours and recipes", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]


@pytest.mark.parametrize("recipe", readme_recipes())
def test_every_readme_recipe_is_a_valid_config(tmp_path: Path, recipe: str) -> None:
    (tmp_path / "x").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text("thing: pi\nmqtt: {host: h, ca: x, cert: x, key: x}\n" + recipe)
    assert load_config(path).devices


def test_readme_has_the_four_recipes() -> None:
    assert len(readme_recipes()) >= 4
