"""``edge-gateway demo``: the local dev cloud and one gateway on mock GPIO, in one process.

The dev cloud (mosquitto with mutual TLS and a throwaway CA, the shadow service, the web
dashboard and the Provision API) and the gateway run under one ``TaskGroup``; Ctrl+C stops
the gateway first (it reports its final state), then the rest.
``edge-gateway desired`` finds this dev cloud through ``devcloud.json`` in the work folder.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import structlog

from gateway.app import build_gateway
from gateway.config import load_config
from gateway.core.values import codec_for
from gateway.devcloud import ShadowClient
from gateway.devcloud.pki import Credentials
from gateway.devcloud.web.cloud import DEFAULT_HTTP, DevCloud, controls_for
from gateway.errors import GatewayError
from gateway.ops.logs import configure_logging

log = structlog.get_logger()
DISCOVERY_FILE = "devcloud.json"


def run_demo(*, workdir: Path, config: Path, http: tuple[str, int] | None = None) -> int:
    configure_logging("auto", "info")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Validate the gateway config (placeholder certificates) before starting anything;
    # a ConfigError goes to the CLI, which exits 2.
    thing = load_config(config, check_files=False, codec_for=codec_for).shadow_thing
    code = 0
    try:
        asyncio.run(_demo(workdir, config, thing, http))
    except* GatewayError as group:
        for exc in group.exceptions:
            log.error("demo_failed", error=str(exc))
        code = 1
    return code


async def _demo(workdir: Path, config_path: Path, thing: str, http: tuple[str, int] | None) -> None:
    # The dashboard's default port falls back to a free one when taken; an explicit one does not.
    cloud = DevCloud(workdir, http=http or DEFAULT_HTTP, port_fallback=http is None)
    async with cloud:
        thing_creds = await asyncio.to_thread(cloud.ca.issue, thing, workdir / "things" / thing)
        broker = cloud.broker
        config = load_config(
            config_path,
            overrides={
                "mqtt": {
                    "host": broker.host,
                    "port": broker.port,
                    "ca": str(thing_creds.ca),
                    "cert": str(thing_creds.cert),
                    "key": str(thing_creds.key),
                },
                "state_dir": str(workdir / "state"),
                "admin_socket": str(workdir / "admin.sock"),
            },
            codec_for=codec_for,
        )
        admin = broker.credentials(broker.admin_identities[0])
        _write_discovery(workdir, cloud, admin, thing, config.shadow.name)
        cloud.hub.add_thing(thing, controls_for(config))
        structlog.contextvars.bind_contextvars(thing=thing)
        gateway = build_gateway(config, mock_gpio=True)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, gateway.stop)
        async with asyncio.TaskGroup() as group:
            devcloud = group.create_task(cloud.run(), name="devcloud")
            await cloud.ready.wait()
            running = group.create_task(gateway.run(), name="gateway")
            _print_instructions(cloud, thing, workdir)
            await gateway.stop_event.wait()
            # The gateway reports its final state through the shadow service, so it goes first.
            await asyncio.wait({running}, timeout=5.0)
            devcloud.cancel()
    print("demo stopped")


def _write_discovery(
    workdir: Path, cloud: DevCloud, admin: Credentials, thing: str, shadow: str | None
) -> None:
    broker = cloud.broker
    info = {
        "host": broker.host,
        "port": broker.port,
        "ca": str(admin.ca),
        "cert": str(admin.cert),
        "key": str(admin.key),
        "thing": thing,
        "shadow": shadow,
        "dashboard": cloud.dashboard_url,
    }
    (workdir / DISCOVERY_FILE).write_text(json.dumps(info, indent=2))


def _print_instructions(cloud: DevCloud, thing: str, workdir: Path) -> None:
    broker = cloud.broker
    print(
        f"""
edge-gateway demo is running: thing '{thing}' on mock GPIO, dev cloud broker on
{broker.host}:{broker.port} (mutual TLS).

  Dashboard: {cloud.dashboard_url}   (open it in a browser; plain HTTP on loopback)

From a second terminal (in this folder):

  .venv/bin/edge-gateway desired led=true fan=0.5    # set desired state in the shadow
  .venv/bin/edge-gateway mock set button true        # press the mock button
  .venv/bin/edge-gateway status                      # the gateway's view
  .venv/bin/edge-gateway desired --show              # the whole shadow document

State lives in {workdir}. Press Ctrl+C to stop.
""",
        flush=True,
    )


def _parse_assignment(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise GatewayError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


async def _desired(workdir: Path, assignments: list[str], show: bool) -> dict[str, Any] | None:
    try:
        info = json.loads((workdir / DISCOVERY_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GatewayError(
            f"no demo dev cloud found in {workdir}: is 'edge-gateway demo' running?"
        ) from exc
    creds = Credentials(ca=Path(info["ca"]), cert=Path(info["cert"]), key=Path(info["key"]))
    async with ShadowClient(info["host"], info["port"], creds, timeout=5.0) as client:
        if assignments:
            desired = dict(_parse_assignment(item) for item in assignments)
            await client.update(info["thing"], {"desired": desired}, shadow_name=info["shadow"])
        if show or not assignments:
            return await client.get(info["thing"], shadow_name=info["shadow"])
    return None


def set_desired(workdir: Path, assignments: list[str], *, show: bool = False) -> int:
    """``edge-gateway desired``: set desired keys of the demo's thing, or show its document."""
    try:
        document = asyncio.run(_desired(workdir, assignments, show))
    except* GatewayError as group:
        raise group.exceptions[0] from None
    if document is not None:
        print(json.dumps(document.get("state", {}), indent=2, sort_keys=True))
    elif assignments:
        print("desired state updated")
    return 0
