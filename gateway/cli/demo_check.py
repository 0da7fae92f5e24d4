"""``edge-gateway demo --check``: the demo's smoke path, for CI and for a first install.

Runs the whole demo (dev cloud, broker, gateway on mock GPIO), waits for the gateway to sync its
shadow, then does one round trip as the cloud app would: flip the first on/off output through
``desired`` and wait until the gateway reports the new value. Then it stops the demo; any step
not done within its bound is a ``GatewayError`` (exit 1).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.app import Gateway
from gateway.core.values import codec_for
from gateway.devcloud import ShadowClient
from gateway.devcloud.pki import Credentials
from gateway.errors import GatewayError

CHECK_TIMEOUT_S = 30.0


def _first_switch(gateway: Gateway) -> str | None:
    for name, device in gateway.config.devices.items():
        codec = codec_for(device)
        if codec.kind == "switch" and codec.writable:
            return name
    return None


async def check_demo(
    gateway: Gateway,
    host: str,
    port: int,
    admin: Credentials,
    *,
    timeout: float = CHECK_TIMEOUT_S,  # noqa: ASYNC109  # one bound for every step, applied below
) -> str:
    """Sync and one desired -> reported round trip; returns what was checked, for the user."""
    thing = gateway.config.shadow_thing
    shadow = gateway.config.shadow.name
    if gateway.shadow is None:
        raise GatewayError("demo check: the demo config has no shadow link ('mqtt' and 'thing')")
    try:
        async with asyncio.timeout(timeout):
            await gateway.shadow.synced.wait()
    except TimeoutError as exc:
        raise GatewayError(f"demo check: the gateway did not sync within {timeout:.0f} s") from exc
    name = _first_switch(gateway)
    if name is None:
        return f"thing {thing!r} synced (no on/off output to flip)"
    async with ShadowClient(host, port, admin, timeout=timeout) as client:
        document = await client.get(thing, shadow_name=shadow) or {}
        reported = document.get("state", {}).get("reported", {})
        value = not reported.get(name, False)

        def applied(doc: dict[str, Any]) -> bool:
            return bool(doc.get("state", {}).get("reported", {}).get(name) is value)

        await client.update(thing, {"desired": {name: value}}, shadow_name=shadow)
        try:
            await client.wait_for(thing, applied, timeout, shadow_name=shadow)
        except TimeoutError as exc:
            raise GatewayError(
                f"demo check: {name}={str(value).lower()} was not reported within {timeout:.0f} s"
            ) from exc
    return f"thing {thing!r} synced; desired {name}={str(value).lower()} applied and reported"
