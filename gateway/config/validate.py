"""Validating config data into the models in plain Python, for the data that is plainly valid.

It understands the vocabulary of ``gateway.config.rules`` and accepts a value only in the form
YAML gives it and pydantic accepts unchanged: an ``int`` for an int, an ``int`` or ``float``
for a float, a ``str`` for a str or a path, a ``list`` for a list or tuple, a ``dict`` for a
mapping or a model. Anything else (a problem, or a value pydantic would coerce, such as
``"5"`` for an int) raises ``Unsure``, and the caller asks pydantic (``gateway.config.strict``),
whose answer and errors are the reference. So this module never has to word an error, and a
test checks that whatever it accepts, pydantic accepts as the same config.
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import cache
from pathlib import Path, PurePath
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from gateway.config.rules import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    RequiredKeys,
    Tag,
    ValidationInfo,
)

_FLOAT_INT_LIMIT = 2**1000  # well inside a float's range; float() of more may overflow


class Unsure(Exception):
    """The data is not plainly valid: pydantic decides (and words the errors)."""


@dataclasses.dataclass(frozen=True)
class _FieldRule:
    name: str
    annotation: Any
    required: bool
    default: Any
    factory: Any


@cache
def _fields(cls: type) -> tuple[tuple[_FieldRule, ...], bool]:
    """The fields of model ``cls`` with their resolved annotations; whether unknown keys are
    ignored (else refused)."""
    # Each base's annotations resolve in its own module (get_type_hints' default for classes).
    hints = get_type_hints(cls, include_extras=True)
    rules = []
    for field in dataclasses.fields(cls):
        no_default = field.default is dataclasses.MISSING
        no_factory = field.default_factory is dataclasses.MISSING
        rules.append(
            _FieldRule(
                field.name,
                hints[field.name],
                no_default and no_factory,
                field.default,
                None if no_factory else field.default_factory,
            )
        )
    config = getattr(cls, "__pydantic_config__", {})
    return tuple(rules), config.get("extra") == "ignore"


def field_types(cls: type) -> dict[str, Any]:
    """Each field of model ``cls`` -> its annotation (``Annotated`` metadata kept)."""
    return {field.name: field.annotation for field in _fields(cls)[0]}


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def validate(annotation: Any, value: Any, context: dict[str, Any] | None = None) -> Any:
    """``value`` validated as ``annotation``; raises ``Unsure`` unless it is plainly valid."""
    return _validate(annotation, value, ValidationInfo(context))


def _validate(annotation: Any, value: Any, info: ValidationInfo) -> Any:
    if is_model(annotation):
        return _model(annotation, value, info)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _annotated(annotation, value, info)
    if origin in (Union, UnionType):
        return _union(get_args(annotation), value, info)
    if origin is Literal:
        if any(type(value) is type(choice) and value == choice for choice in get_args(annotation)):
            return value
        raise Unsure
    if origin is list:
        if type(value) is not list:
            raise Unsure
        (item,) = get_args(annotation)
        return [_validate(item, element, info) for element in value]
    if origin is tuple:
        return _tuple(get_args(annotation), value, info)
    if origin is dict:
        if type(value) is not dict:
            raise Unsure
        key_type, value_type = get_args(annotation)
        return {
            _validate(key_type, key, info): _validate(value_type, item, info)
            for key, item in value.items()
        }
    return _scalar(annotation, value)


def _scalar(annotation: Any, value: Any) -> Any:
    if annotation is Any:
        return value
    if annotation is NoneType or annotation is None:
        if value is None:
            return None
    elif annotation is bool or annotation is int or annotation is str:
        if type(value) is annotation:
            return value
    elif annotation is float:
        if type(value) is float and math.isfinite(value):
            return value
        # An int as large as a float can hold (YAML reads any length of digits as an int).
        if type(value) is int and -_FLOAT_INT_LIMIT < value < _FLOAT_INT_LIMIT:
            return float(value)
    elif annotation is Path:
        if isinstance(value, PurePath):
            return Path(value)
        if type(value) is str and value and "\x00" not in value:
            return Path(value)
    raise Unsure


def _tuple(items: tuple[Any, ...], value: Any, info: ValidationInfo) -> tuple[Any, ...]:
    if type(value) not in (list, tuple):
        raise Unsure
    if len(items) == 2 and items[1] is Ellipsis:
        return tuple(_validate(items[0], element, info) for element in value)
    if len(items) != len(value):
        raise Unsure
    return tuple(_validate(item, element, info) for item, element in zip(items, value, strict=True))


def _call(func: Any, value: Any, info: ValidationInfo) -> Any:
    try:
        return func(value, info) if func.__code__.co_argcount == 2 else func(value)
    except (ValueError, AssertionError) as exc:
        raise Unsure from exc


def _annotated(annotation: Any, value: Any, info: ValidationInfo) -> Any:
    inner, *metadata = get_args(annotation)
    # Pydantic's order: a later marker wraps the earlier ones, so its before-validator runs first.
    for marker in reversed(metadata):
        if isinstance(marker, BeforeValidator):
            value = _call(marker.func, value, info)
        elif isinstance(marker, RequiredKeys) and marker.func(value):
            raise Unsure
    choose = next((m for m in metadata if isinstance(m, Discriminator | Field)), None)
    if isinstance(choose, Discriminator) or (isinstance(choose, Field) and choose.discriminator):
        value = _discriminated(inner, choose, value, info)
    else:
        value = _validate(inner, value, info)
    for marker in metadata:
        if isinstance(marker, Field):
            _check_bounds(marker, value)
        elif isinstance(marker, AfterValidator):
            value = _call(marker.func, value, info)
    return value


def _check_bounds(rule: Field, value: Any) -> None:
    if isinstance(value, str):
        if rule.min_length is not None and len(value) < rule.min_length:
            raise Unsure
        if rule.max_length is not None and len(value) > rule.max_length:
            raise Unsure
        # "$" before a final newline matches in Python's re, not in pydantic's regex engine.
        if rule.pattern is not None and ("\n" in value or not re.search(rule.pattern, value)):
            raise Unsure
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if rule.gt is not None and not value > rule.gt:
            raise Unsure
        if rule.ge is not None and not value >= rule.ge:
            raise Unsure
        if rule.lt is not None and not value < rule.lt:
            raise Unsure
        if rule.le is not None and not value <= rule.le:
            raise Unsure
    elif isinstance(value, list | tuple | dict):
        if rule.min_length is not None and len(value) < rule.min_length:
            raise Unsure
        if rule.max_length is not None and len(value) > rule.max_length:
            raise Unsure


def _members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, UnionType):
        return get_args(annotation)
    return (annotation,)


def _tag_of(member: Any) -> str | None:
    if get_origin(member) is Annotated:
        return next((m.tag for m in get_args(member)[1:] if isinstance(m, Tag)), None)
    return None


@cache
def _literal_tags(union: Any, key: str) -> dict[object, Any]:
    """Each value of the discriminating ``key`` -> the union member whose Literal holds it."""
    tags: dict[object, Any] = {}
    for member in _members(union):
        for field in _fields(member)[0]:
            if field.name == key:
                for tag in get_args(field.annotation):
                    tags[tag] = member
    return tags


def _discriminated(
    union: Any, choose: Field | Discriminator, value: Any, info: ValidationInfo
) -> Any:
    if type(value) is not dict:
        raise Unsure
    if isinstance(choose, Discriminator):
        tag = choose.func(value)
        chosen = next((m for m in _members(union) if _tag_of(m) == tag), None)
    else:
        key = value.get(choose.discriminator)
        chosen = _literal_tags(union, choose.discriminator).get(key) if type(key) is str else None
    if chosen is None:
        raise Unsure
    return _validate(chosen, value, info)


def _union(members: tuple[Any, ...], value: Any, info: ValidationInfo) -> Any:
    if value is None and NoneType in members:
        return None
    accepted = []
    for member in members:
        if member is NoneType:
            continue
        try:
            result = _validate(member, value, info)
        except Unsure:
            continue
        # As pydantic's "smart" unions: a member that takes the value unchanged wins.
        if type(result) is type(value) and result == value and not isinstance(value, dict | list):
            return result
        accepted.append(result)
    if accepted and all(result == accepted[0] for result in accepted):
        return accepted[0]
    raise Unsure  # none, or several with different results: pydantic's rules decide


def _model(cls: type, value: Any, info: ValidationInfo) -> Any:
    if type(value) is not dict:
        raise Unsure
    fields, ignore_unknown = _fields(cls)
    names = {field.name for field in fields}
    if not ignore_unknown and any(key not in names for key in value):
        raise Unsure
    given: dict[str, Any] = {}
    for field in fields:
        if field.name in value:
            given[field.name] = _validate(field.annotation, value[field.name], info)
        elif field.required:
            raise Unsure
    try:
        return cls(**given)
    except (ValueError, TypeError, AssertionError) as exc:
        raise Unsure from exc


def parse(annotation: Any, data: Any, context: dict[str, Any] | None = None) -> Any:
    """``data`` validated as ``annotation`` (a model, or any annotation the models use);
    raises ``ConfigInvalid``. Plainly valid data never loads pydantic."""
    try:
        return validate(annotation, data, context)
    except Unsure:
        pass
    from gateway.config.strict import validate_strictly

    return validate_strictly(annotation, data, context)
