"""``edge-gateway demo --check`` fails with the step that did not happen, within its bound."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.cli.demo_check import check_demo
from gateway.devcloud.pki import Credentials
from gateway.errors import GatewayError


async def test_a_gateway_that_never_syncs_fails_the_check_in_time() -> None:
    gateway: Any = SimpleNamespace(
        config=SimpleNamespace(
            shadow_thing="demo-pi", shadow=SimpleNamespace(name=None), devices={}
        ),
        shadow=SimpleNamespace(synced=asyncio.Event()),
    )
    creds = Credentials(ca=Path("ca.pem"), cert=Path("cert.pem"), key=Path("key.pem"))
    with pytest.raises(GatewayError, match="did not sync within"):
        async with asyncio.timeout(5):
            await check_demo(gateway, "127.0.0.1", 1, creds, timeout=0.05)
