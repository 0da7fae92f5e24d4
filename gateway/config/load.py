"""Loading a config: YAML with positions, ``provisioned.yaml`` merged under it, validation,
the file checks, the cross-device checks, and every problem as ``FILE:LINE:COL: key: what``.

The models never touch the disk; whether the files a config names exist (fields marked
``MUST_EXIST``) is checked here, on the data being validated, and reported at the key that names
them together with any validation error.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path, PurePath
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from gateway.config.checks import CodecFactory, Problem, cross_field_problems
from gateway.config.paths import MUST_EXIST, resolve_path
from gateway.config.provisioned import default_credential_paths, read_provisioned
from gateway.config.rules import ConfigInvalid
from gateway.config.schema import (
    MAX_CLIENT_ID_BYTES,
    DeviceConfig,
    GatewayConfig,
    ProvisionSetup,
)
from gateway.config.validate import field_types, is_model, parse
from gateway.config.yaml11 import is_name_place, yaml11_problems
from gateway.config.yamlsource import KeyPath, YamlDocument, load_yaml
from gateway.errors import ConfigError
from gateway.paths import default_state_dir


def _dotted(loc: KeyPath) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _data_path(data: Any, loc: tuple[int | str, ...]) -> KeyPath:
    """Strip pydantic's union tags from ``loc``: keep only the parts that exist in the data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, Mapping) and isinstance(part, str) and part[:1].isupper():
            continue  # a discriminator tag such as 'LED' inside devices.<name>
        else:
            path.append(part)
            node = None
    return tuple(path)


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    message = str(error["msg"])
    from gateway.config.suggest import closest_key, closest_word  # difflib: for errors only

    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's unknown key
        suggestion = closest_key(tuple(error["loc"]))
        if suggestion is not None:
            return f"unknown key; did you mean `{suggestion}`?"
        return "unknown key; expected one of the documented keys (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        tag = error.get("ctx", {}).get("tag", "")
        suggestion = closest_word(str(tag), re.findall(r"'([^']+)'", str(tags)))
        if suggestion is not None:
            return f"unknown device type {tag!r}; did you mean `{suggestion}`?"
        return f"unknown device type {tag!r}; expected one of {tags}"
    if kind == "union_tag_not_found":
        return "missing 'type'; expected a gpiozero device class name such as LED or Button"
    message = message.removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if _shows_input(error) else message


def _shows_input(error: Mapping[str, Any]) -> bool:
    value = error.get("input")
    return isinstance(value, str | int | float | bool) and error["type"] != "value_error"


_THING_ERRORS = frozenset({"string_type", "string_pattern_mismatch", "string_too_long"})


def _describe_thing(error: Mapping[str, Any]) -> str:
    """A refused ``thing`` (a value YAML read as something else is kept as its text)."""
    value = error.get("input")
    shown = "null" if value is None else repr(value)[:60]
    hint = " (or leave the key out to use the provisioned thing)" if value is None else ""
    return (
        f"{shown} is not a thing name: expected 1-{MAX_CLIENT_ID_BYTES} characters of "
        f"a-z A-Z 0-9 : _ -{hint}"
    )


def format_validation_error(document: YamlDocument, errors: list[dict[str, Any]]) -> list[str]:
    """Each of pydantic's ``errors`` (``ConfigInvalid.errors``) as ``FILE:LINE:COL: key: what``."""
    lines = []
    for error in errors:
        path = _data_path(document.data, tuple(error["loc"]))
        if error["type"] == "union_tag_invalid":
            path = (*path, "type")
        if path == ("thing",) and error["type"] in _THING_ERRORS:
            lines.append(f"{document.locate(path)}: thing: {_describe_thing(error)}")
            continue
        lines.append(f"{document.locate(path)}: {_dotted(path)}: {_describe(error)}")
    return lines


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
    codec_for: CodecFactory | None = None,
) -> GatewayConfig:
    """Load and validate ``path``; raises ``ConfigError`` listing every problem found.

    ``overrides`` are merged over the file (used by the demo to point at its own broker);
    ``check_files=False`` skips the file checks. ``codec_for`` gives each device's value codec
    (``gateway.core.values.codec_for``) so fail-safe values are checked against the device; without
    it they are left to the engine. The CLI, the demo and the daemon's reload pass it.
    """
    document = load_yaml(path, is_name_place, collect=True)
    data = document.data
    found = list(document.problems)  # duplicate keys: reported with everything else
    if not isinstance(data, dict):
        raise ConfigError([f"{document.locate(())}: (top level): expected a mapping of keys"])
    # Numbers YAML 1.1 read differently from what was written: reported with everything else.
    misread_at = yaml11_problems(document)
    misread = _located(document, misread_at)
    # what the validation says about a misread value adds nothing to the misreading
    said = tuple(f"{document.locate(loc)}: {_dotted(loc)}: " for loc, _ in misread_at)
    if overrides:
        data = _deep_merge(data, overrides)
    base_dir = path.resolve().parent
    data, pending = _with_provisioning(data, base_dir)
    # The models never touch the disk: the files are checked here, and reported together
    # with any validation error so one run shows every problem.
    missing = _identity_problems(data)
    missing += file_problems(data, base_dir, pending) if check_files else []
    try:
        config: GatewayConfig = parse(GatewayConfig, data, {"base_dir": base_dir})
    except ConfigInvalid as exc:
        lines = format_validation_error(document, exc.errors) + _located(document, missing)
        found += misread + [_provisioning_hint(line, data) for line in _unsaid(lines, said)]
        # The checks across devices still run on every device that is valid by itself.
        found += _partial_cross_checks(document, data, base_dir, codec_for)
        raise ConfigError(found) from exc
    lines = _unsaid(_located(document, missing), said)
    found += misread + [_provisioning_hint(line, data) for line in lines]
    found += _located(document, cross_field_problems(config, codec_for))
    if found:
        raise ConfigError(found)
    return config.with_keys_given(frozenset(data))


def _unsaid(lines: list[str], said: tuple[str, ...]) -> list[str]:
    """``lines`` without those at a place a YAML 1.1 misreading is reported (they add nothing
    to it)."""
    return [line for line in lines if not (said and line.startswith(said))]


def _partial_cross_checks(
    document: YamlDocument,
    data: Mapping[str, Any],
    base_dir: Path,
    codec_for: CodecFactory | None,
) -> list[str]:
    """The cross-device checks on the devices that validate by themselves (the config as a
    whole did not), and a note naming what they could not cover."""
    raw = data.get("devices", {})
    where = f"{document.locate(('devices',))}: devices"
    if not isinstance(raw, dict):
        return [f"{where}: note: the checks across devices did not run (fix devices first)"]
    valid: dict[str, Any] = {}
    for name, device in raw.items():
        try:
            valid[name] = parse(DeviceConfig, device, {"base_dir": base_dir})
        except ConfigInvalid:
            continue
    interlock: Any = None
    try:
        interlock = parse(field_types(GatewayConfig)["interlock"], data.get("interlock"))
    except ConfigInvalid:
        interlock = None
    skipped = [str(name) for name in raw if name not in valid]
    stand_in = GatewayConfig(devices=valid, interlock=interlock)
    problems = [
        (loc, message)
        for loc, message in cross_field_problems(stand_in, codec_for)
        # only the devices' checks: the stand-in holds nothing else
        if loc[:1] in (("devices",), ("interlock",))
        # a follow or interlock naming a device left out here is not unknown
        and not any(repr(name) in message for name in skipped)
        and not (loc == ("devices",) and skipped)  # the size budget needs every device
    ]
    lines = _located(document, problems)
    if skipped and len(raw) > 1:  # a lone device has nothing to clash with
        names = ", ".join(repr(name) for name in skipped[:5])
        names += ", ..." if len(skipped) > 5 else ""
        lines.append(
            f"{where}: note: the checks across devices (shared pins, follows, interlocks, "
            f"shadow size) could not include {names}: fix the errors above, then check again"
        )
    return lines


def _identity_problems(data: Mapping[str, Any]) -> list[Problem]:
    """The shadow link's broker without its thing (checked on the raw data, so it is reported
    beside any field error in the same run)."""
    if "thing" in data and data["thing"] is None:  # written, but YAML read it as null
        return [(("thing",), _describe_thing({"input": None}))]
    if data.get("mqtt") is not None and "thing" not in data:
        return [(("thing",), "required key is missing")]
    return []


def _located(document: YamlDocument, problems: list[Problem]) -> list[str]:
    return [f"{document.locate(loc)}: {_dotted(loc)}: {message}" for loc, message in problems]


def file_problems(
    data: Mapping[str, Any], base_dir: Path, pending: Collection[Path] = ()
) -> list[Problem]:
    """Every file the config names (fields marked ``MUST_EXIST``) that is not there, at its key;
    ``pending`` files are about to be written by provisioning. Read from the raw data, so these
    are reported together with any validation errors."""
    return [
        (loc, f"file {file} does not exist")
        for loc, raw in _file_fields(GatewayConfig, data, ())
        if isinstance(raw, str | PurePath)
        and (file := resolve_path(Path(raw), base_dir)) not in pending
        and not file.is_file()
    ]


def _file_fields(model: type, data: object, where: KeyPath) -> Iterator[tuple[KeyPath, object]]:
    if not isinstance(data, Mapping):
        return
    for name, annotation in field_types(model).items():
        if name not in data:
            continue
        if get_origin(annotation) is Annotated and MUST_EXIST in get_args(annotation)[1:]:
            yield (*where, name), data[name]
        else:
            for inner in _models_in(annotation):
                yield from _file_fields(inner, data[name], (*where, name))


def _models_in(annotation: object) -> list[type]:
    """The models a field holds directly or as an option (``X``, ``X | None``), not in a
    container."""
    if is_model(annotation):
        return [annotation]  # type: ignore[list-item]
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    return []


# -- provisioned credentials -----------------------------------------------------------------

_PROVISIONED_KEYS = ("thing: ", "mqtt.host: ", "mqtt.cert: ", "mqtt.key: ")


def _state_dir_of(data: Mapping[str, Any], base_dir: Path) -> Path:
    raw = data.get("state_dir")
    state_dir = (Path(raw) if isinstance(raw, str) else default_state_dir()).expanduser()
    return state_dir if state_dir.is_absolute() else base_dir / state_dir


def _with_provisioning(data: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], set[Path]]:
    """Merge ``state_dir/provisioned.yaml`` under the file (the file's keys win); with a
    ``provision:`` block, mqtt.cert/key default to the files provisioning writes."""
    state_dir = _state_dir_of(data, base_dir)
    provisioned = read_provisioned(state_dir)
    if provisioned:
        data = _deep_merge(provisioned, data)
    pending: set[Path] = set()
    mqtt = data.get("mqtt")
    if data.get("provision") is not None and isinstance(mqtt, dict):
        cert, key = default_credential_paths(state_dir)
        data = {**data, "mqtt": {"cert": str(cert), "key": str(key), **mqtt}}
        pending = {cert, key}
    return data, pending


def _provisioning_hint(line: str, data: Mapping[str, Any]) -> str:
    if not line.endswith(": required key is missing"):
        return line
    if not any(f" {key}required" in line for key in _PROVISIONED_KEYS):
        return line
    if data.get("provision") is not None:
        return line + " (provisioning sets it: run 'edge-gateway provision' or give it here)"
    return line + (
        " (give it here, or add a 'provision:' block to obtain it from the cloud,"
        " or install a Thing Batch's thing with 'edge-gateway import-batch')"
    )


def load_provision_setup(path: Path) -> ProvisionSetup:
    """The provisioning-related settings of ``path``; ``ConfigError`` with FILE:LINE:COL."""
    document = load_yaml(path, is_name_place)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([f"{document.locate(())}: (top level): expected a mapping of keys"])
    base_dir = path.resolve().parent
    try:
        setup: ProvisionSetup = parse(ProvisionSetup, data, {"base_dir": base_dir})
    except ConfigInvalid as exc:
        raise ConfigError(format_validation_error(document, exc.errors)) from exc
    return setup
