"""The keys a config location allows, for "did you mean `frequency_hz`?" (difflib, pure).

The model at a location is found by walking the models' fields along an error's
location: a mapping's key, a list's index and a device's ``type`` tag step into the type they
hold.
"""

from __future__ import annotations

import difflib
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from gateway.config.schema import GatewayConfig
from gateway.config.validate import field_types, is_model


def _members(annotation: Any) -> list[Any]:
    """The alternatives of ``X | Y``, ``Optional[X]`` and ``Annotated[X, ...]``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> Any:
    """The type one step further in: a model's field, a dict's value, a list's item, or the
    union member a discriminator tag (a device type) names."""
    for member in _members(annotation):
        if is_model(member):
            fields = field_types(member)
            field = fields.get(str(part))
            if field is not None:
                return field
            tagged = fields.get("type")
            if tagged is not None and part in get_args(tagged):
                return member
        origin = get_origin(member)
        if origin is dict and isinstance(part, str):
            return get_args(member)[1]
        if origin is list and isinstance(part, int):
            return get_args(member)[0]
    tags = [m for m in _members(annotation) if _is_tagged(m, part)]
    return tags[0] if tags else None


def _is_tagged(member: Any, part: str | int) -> bool:
    if not is_model(member):
        return False
    field = field_types(member).get("type")
    return field is not None and get_origin(field) is Literal and part in get_args(field)


def known_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed beside the last part of ``loc`` (a pydantic error location)."""
    annotation: Any = GatewayConfig
    for part in loc[:-1]:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    keys: list[str] = []
    for member in _members(annotation):
        if is_model(member):
            keys += list(field_types(member))
    return keys


def closest_word(word: str, choices: list[str]) -> str | None:
    """The choice closest to ``word`` (case aside), if one is close enough."""
    by_lower = {choice.lower(): choice for choice in choices}
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def closest_key(loc: tuple[str | int, ...]) -> str | None:
    """The allowed key closest to the unknown one at ``loc``, if one is close enough."""
    if not loc or not isinstance(loc[-1], str):
        return None
    return closest_word(loc[-1], known_keys(loc))
