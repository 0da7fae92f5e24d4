"""The vocabulary the config's models are written in: frozen dataclasses whose fields carry
their rules in ``Annotated`` metadata (pure; imports nothing heavy).

The markers are named and used as pydantic's (``Field(ge=1)``, ``BeforeValidator(fn)``,
``AfterValidator(fn)``, ``Discriminator``, ``Tag``) and mean the same, but they do not import
pydantic: the daemon validates a good config with ``gateway.config.validate`` (plain Python, a
few hundred kB), and only a config with a problem, the JSON Schema and a value the plain check
is unsure of go to pydantic (``gateway.config.strict``), which reads each marker as the pydantic
object it names, so every error message is pydantic's, as before.

Rules of the vocabulary:
- a model is a class decorated with ``@model`` (a frozen, keyword-only dataclass; unknown
  keys refused) or ``@model(extra="ignore")``; checks across its fields go in
  ``__post_init__`` and raise ``ValueError`` (reported at the model, as pydantic's "after" model
  validators were);
- in ``Annotated[T, ...]``, ``Field`` comes first; ``BeforeValidator`` runs on the raw value,
  ``AfterValidator`` on the validated one; a validator taking two arguments gets an ``info``
  whose ``context`` holds ``base_dir``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = [
    "AfterValidator",
    "BeforeValidator",
    "ConfigInvalid",
    "Discriminator",
    "Field",
    "RequiredKeys",
    "Tag",
    "ValidationInfo",
    "model",
]

T = TypeVar("T")
Validator = Callable[..., Any]


class _PydanticMetadata:
    """Seen by pydantic as grouped metadata (annotated-types' protocol): when pydantic builds a
    schema it iterates the marker and gets the pydantic objects it stands for."""

    __is_annotated_types_grouped_metadata__ = True

    def pydantic(self) -> list[Any]:  # pragma: no cover - every marker overrides it
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        return iter(self.pydantic())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Field(_PydanticMetadata):
    """Bounds of a number, length and pattern of a string, or a union's discriminating key."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    discriminator: str | None = None

    def pydantic(self) -> list[Any]:
        import pydantic

        given = {
            f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None
        }
        discriminator = given.pop("discriminator", None)
        items: list[Any] = list(pydantic.Field(**given).metadata)
        if discriminator is not None:
            items.append(pydantic.Discriminator(discriminator))
        return items


@dataclasses.dataclass(frozen=True)
class BeforeValidator(_PydanticMetadata):
    """``func`` turns the raw value into what the type validates (e.g. a pin name into its
    number); ``json_schema_input_type`` is what the JSON Schema shows a user may write."""

    func: Validator
    json_schema_input_type: Any = None  # None: the type's own

    def pydantic(self) -> list[Any]:
        import pydantic

        if self.json_schema_input_type is None:
            return [pydantic.BeforeValidator(self.func)]
        return [
            pydantic.BeforeValidator(self.func, json_schema_input_type=self.json_schema_input_type)
        ]


@dataclasses.dataclass(frozen=True)
class AfterValidator(_PydanticMetadata):
    """``func`` checks (raising ``ValueError``) or converts the validated value."""

    func: Validator

    def pydantic(self) -> list[Any]:
        import pydantic

        return [pydantic.AfterValidator(self.func)]


@dataclasses.dataclass(frozen=True)
class Discriminator(_PydanticMetadata):
    """A union member chosen by ``func(raw value)`` -> the ``Tag`` of the member; ``None``: the
    error ``custom_error_type`` with ``custom_error_message``."""

    func: Callable[[Any], str | None]
    custom_error_type: str
    custom_error_message: str

    def pydantic(self) -> list[Any]:
        import pydantic

        return [
            pydantic.Discriminator(
                self.func,
                custom_error_type=self.custom_error_type,
                custom_error_message=self.custom_error_message,
            )
        ]


@dataclasses.dataclass(frozen=True)
class Tag(_PydanticMetadata):
    """The tag of a union member chosen by a callable ``Discriminator``."""

    tag: str

    def pydantic(self) -> list[Any]:
        import pydantic

        return [pydantic.Tag(self.tag)]


@dataclasses.dataclass(frozen=True)
class RequiredKeys(_PydanticMetadata):
    """Keys a mapping must have that depend on its other keys: ``func(raw mapping)`` names the
    missing ones, each reported as a missing key (before anything else in the mapping)."""

    func: Callable[[Any], list[str]]

    def pydantic(self) -> list[Any]:
        import pydantic
        from pydantic_core import InitErrorDetails

        def check(data: Any, handler: Any) -> Any:
            if missing := self.func(data):
                details = [InitErrorDetails(type="missing", loc=(k,), input=data) for k in missing]
                raise pydantic.ValidationError.from_exception_data("RequiredKeys", details)
            return handler(data)

        return [pydantic.WrapValidator(check)]


@dataclasses.dataclass(frozen=True)
class ValidationInfo:
    """What a two-argument validator gets: ``context`` (``{"base_dir": ...}``), as pydantic's."""

    context: dict[str, Any] | None


class ConfigInvalid(Exception):
    """Data that is not valid: ``errors`` are pydantic's error dicts (``type``, ``loc``,
    ``msg``, ``input``, ``ctx``)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


@overload
def model(cls: type[T], /) -> type[T]: ...


@overload
def model(*, extra: str = "forbid") -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(
    kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,)
)
def model(cls: type[T] | None = None, /, *, extra: str = "forbid") -> Any:
    """A config model: a frozen, keyword-only dataclass; ``extra`` says what unknown keys get
    ("forbid": an error; "ignore": dropped).

    The dataclass's methods are the shared ones below, not generated per class: generating
    them (an ``exec`` each) was most of the config's import time, paid at every start."""

    def wrap(cls: type[T]) -> type[T]:
        cls.__pydantic_config__ = {"extra": extra}  # type: ignore[attr-defined]
        cls = dataclasses.dataclass(init=False, repr=False, eq=False, kw_only=True)(cls)
        for name, method in _MODEL_METHODS.items():
            setattr(cls, name, method)
        return cls

    return wrap if cls is None else wrap(cls)


_MISSING = dataclasses.MISSING


def _init(self: Any, **values: Any) -> None:
    for name, field in self.__dataclass_fields__.items():
        if name in values:
            value = values.pop(name)
        elif field.default is not _MISSING:
            value = field.default
        elif field.default_factory is not _MISSING:
            value = field.default_factory()
        else:
            raise TypeError(f"{type(self).__name__}() is missing the keyword argument {name!r}")
        object.__setattr__(self, name, value)
    if values:
        unexpected = sorted(values)
        raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {unexpected}")
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in self.__dataclass_fields__)


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__dataclass_fields__)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: object) -> Any:  # bool, or NotImplemented for another type
    if other.__class__ is not self.__class__:
        return NotImplemented
    return bool(_values(self) == _values(other))


def _hash(self: Any) -> int:
    return hash(_values(self))


def _setattr(self: Any, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


# What dataclass(frozen=True, kw_only=True) generates, once for every model.
_MODEL_METHODS = {
    "__init__": _init,
    "__repr__": _repr,
    "__eq__": _eq,
    "__hash__": _hash,
    "__setattr__": _setattr,
    "__delattr__": _delattr,
}
