"""Validating a config while building only the validators it needs.

pydantic builds a model's validator the first time it is used (the models are declared with
``defer_build=True``), and validating ``GatewayConfig`` in one go builds the validator of
every device type, because ``devices`` is a union of all of them: most of the config's start-up
time and several MB of memory for device types the config never names.

``validate_config`` validates the top level with the devices left as plain mappings, then each
device with the model its ``type`` names, and assembles the ``GatewayConfig`` from those
already-validated parts. A config with any problem at all goes through
``GatewayConfig.model_validate`` instead, so every error (and its ``FILE:LINE:COL``) is
exactly what the full validation reports.
"""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

from pydantic import BaseModel, Field, ValidationError, create_model

from gateway.config.schema import DeviceConfig, GatewayConfig


@cache
def _models_by_type() -> dict[str, type[BaseModel]]:
    """Each device ``type`` value -> the model that validates it (the union's members)."""
    union = get_args(DeviceConfig)[0]
    models: dict[str, type[BaseModel]] = {}
    for model in get_args(union):
        for tag in get_args(model.model_fields["type"].annotation):
            models[tag] = model
    return models


@cache
def _root_model() -> type[GatewayConfig]:
    """``GatewayConfig`` with each device left as a mapping (its own validators still run)."""
    key = get_args(GatewayConfig.model_fields["devices"].annotation)[0]
    return create_model(
        "GatewayConfigTopLevel",
        __base__=GatewayConfig,
        devices=(dict[key, dict[str, Any]], Field(default_factory=dict)),  # type: ignore[valid-type]
    )


def _quick(data: dict[str, Any], context: dict[str, Any]) -> GatewayConfig | None:
    """The config validated part by part, or None if any part has a problem."""
    models = _models_by_type()
    try:
        top = _root_model().model_validate(data, context=context)
        raw_devices: dict[str, dict[str, Any]] = dict(top.devices)  # type: ignore[arg-type]
        devices: dict[str, Any] = {}
        for name, raw in raw_devices.items():
            kind = raw.get("type")
            model = models.get(kind) if isinstance(kind, str) else None
            if model is None:
                return None  # a missing or unknown type: the full validation says which
            devices[name] = model.model_validate(raw, context=context)
    except ValidationError:
        return None
    values = {name: getattr(top, name) for name in GatewayConfig.model_fields}
    values["devices"] = devices
    # Every part is validated: assemble without validating again.
    return GatewayConfig.model_construct(_fields_set=set(top.model_fields_set), **values)


def validate_config(data: dict[str, Any], context: dict[str, Any]) -> GatewayConfig:
    """``GatewayConfig.model_validate(data, context=context)``, building only the device
    validators ``data`` uses when it is valid; raises the full validation's ``ValidationError``
    when it is not."""
    config = _quick(data, context)
    if config is None:
        config = GatewayConfig.model_validate(data, context=context)
    return config
