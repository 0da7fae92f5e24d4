"""The dev cloud's web side: the live dashboard (``hub``, ``dashboard``) and ``DevCloud``,
which runs mosquitto, the shadow service, the dashboard and the Provision API together."""

from gateway.devcloud.web.cloud import (
    BatchThing,
    DevCloud,
    controls_for,
    create_thing_batch,
    parse_address,
)
from gateway.devcloud.web.dashboard import DashboardGuard, dashboard_app
from gateway.devcloud.web.hub import DashboardHub, DesiredRejectedError

__all__ = [
    "BatchThing",
    "DashboardGuard",
    "DashboardHub",
    "DesiredRejectedError",
    "DevCloud",
    "controls_for",
    "create_thing_batch",
    "dashboard_app",
    "parse_address",
]
