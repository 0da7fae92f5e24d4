"""Loading a config: YAML with positions, ``provisioned.yaml`` merged under it, validation,
the file checks, the cross-device checks, and every problem as ``FILE:LINE:COL: key: what``.

The models never touch the disk; whether the files a config names exist (fields marked
``MUST_EXIST``) is checked here, on the data being validated, and reported at the key that names
them together with any validation error.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from pathlib import Path, PurePath
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gateway.config.checks import CodecFactory, Problem, cross_field_problems
from gateway.config.lazyvalidate import validate_config
from gateway.config.provisioned import default_credential_paths, read_provisioned
from gateway.config.schema import MUST_EXIST, GatewayConfig, ProvisionSetup, resolve_path
from gateway.config.yamlsource import KeyPath, YamlDocument, load_yaml
from gateway.errors import ConfigError


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
    if kind == "extra_forbidden":
        return "unknown key; expected one of the documented keys (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        tag = error.get("ctx", {}).get("tag", "")
        return f"unknown device type {tag!r}; expected one of {tags}"
    if kind == "union_tag_not_found":
        return "missing 'type'; expected a gpiozero device class name such as LED or Button"
    message = message.removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if _shows_input(error) else message


def _shows_input(error: Mapping[str, Any]) -> bool:
    value = error.get("input")
    return isinstance(value, str | int | float | bool) and error["type"] != "value_error"


def format_validation_error(document: YamlDocument, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        path = _data_path(document.data, tuple(error["loc"]))
        if error["type"] == "union_tag_invalid":
            path = (*path, "type")
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
    document = load_yaml(path)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([f"{document.locate(())}: (top level): expected a mapping of keys"])
    if overrides:
        data = _deep_merge(data, overrides)
    base_dir = path.resolve().parent
    data, pending = _with_provisioning(data, base_dir)
    # The models never touch the disk: the files are checked here, and reported together
    # with any validation error so one run shows every problem.
    missing = file_problems(data, base_dir, pending) if check_files else []
    try:
        config = validate_config(data, {"base_dir": base_dir})
    except ValidationError as exc:
        lines = [_provisioning_hint(line, data) for line in format_validation_error(document, exc)]
        raise ConfigError(lines + _located(document, missing)) from exc
    if missing:
        raise ConfigError(_located(document, missing))
    problems = cross_field_problems(config, codec_for)
    if problems:
        raise ConfigError(_located(document, problems))
    return config


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


def _file_fields(
    model: type[BaseModel], data: object, where: KeyPath
) -> Iterator[tuple[KeyPath, object]]:
    if not isinstance(data, Mapping):
        return
    for name, field in model.model_fields.items():
        if name not in data:
            continue
        if MUST_EXIST in field.metadata:
            yield (*where, name), data[name]
        else:
            for inner in _models_in(field.annotation):
                yield from _file_fields(inner, data[name], (*where, name))


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The models a field holds directly or as an option (``X``, ``X | None``), not in a
    container."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    return []


# -- provisioned credentials -----------------------------------------------------------------

_PROVISIONED_KEYS = ("thing: ", "mqtt.host: ", "mqtt.cert: ", "mqtt.key: ")


def _state_dir_of(data: Mapping[str, Any], base_dir: Path) -> Path:
    raw = data.get("state_dir")
    state_dir = Path(raw if isinstance(raw, str) else "/var/lib/edge-gateway").expanduser()
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
    return line + " (give it here, or add a 'provision:' block to obtain it from the cloud)"


def load_provision_setup(path: Path) -> ProvisionSetup:
    """The provisioning-related settings of ``path``; ``ConfigError`` with FILE:LINE:COL."""
    document = load_yaml(path)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([f"{document.locate(())}: (top level): expected a mapping of keys"])
    base_dir = path.resolve().parent
    try:
        return ProvisionSetup.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(document, exc)) from exc
