"""The cloud links configured beside the shadow link: one line per cloud.

A new cloud is a package under ``gateway/links/`` that builds a ``LinkPlan`` (its
``CloudLink``, the MQTT connector of its own connection loop, any extra named tasks) from the
config and the device core; it is added here, and ``build_gateway`` hands the plans to the
``Gateway``, which runs each one beside the shadow link.
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.core.ports import DeviceCore, LinkPlan


def cloud_links(config: GatewayConfig, core: DeviceCore) -> list[LinkPlan]:
    """The plans of every cloud link ``config`` asks for besides the shadow (each imported
    only when configured: a daemon loads no cloud it does not serve)."""
    plans: list[LinkPlan] = []
    if config.thinx is not None:
        from gateway.links.thinx.plan import thinx_plan

        plans.append(thinx_plan(config, core))
    if config.mindconnect is not None:  # Siemens Insights Hub (MindConnect MQTT)
        from gateway.links.mindconnect.plan import mindconnect_plans

        plans += mindconnect_plans(config, core)
    return plans
