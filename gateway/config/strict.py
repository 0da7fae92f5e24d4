"""The reference validation of config data, by pydantic (imported only here).

Used for data that ``gateway.config.validate`` is unsure of (a problem, or a value pydantic
coerces) and for the config's JSON Schema. Pydantic reads the markers of
``gateway.config.rules`` as the pydantic objects they name.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.config.rules import ConfigInvalid


@cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def validate_strictly(annotation: Any, data: Any, context: dict[str, Any] | None = None) -> Any:
    """``data`` validated as ``annotation`` by pydantic; raises ``ConfigInvalid`` with its
    errors."""
    try:
        return _adapter(annotation).validate_python(data, context=context)
    except ValidationError as exc:
        raise ConfigInvalid([dict(error) for error in exc.errors(include_url=False)]) from exc


def json_schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of what a user may write for ``annotation``."""
    return _adapter(annotation).json_schema()
