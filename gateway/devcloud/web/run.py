"""``edge-gateway devcloud``: the local dev cloud on its own, optionally with a batch of things."""

from __future__ import annotations

import asyncio
import shlex
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from gateway.devcloud.mindconnect import ANSWER_SHAPES
from gateway.devcloud.web.cloud import BatchThing, DevCloud, command_prefix
from gateway.errors import GatewayError
from gateway.ops.logs import configure_logging

__all__ = ["command_prefix", "parse_claims", "run_devcloud"]

log = structlog.get_logger()


def parse_claims(items: Sequence[str]) -> dict[str, str]:
    """``--claim ID`` (thing named ID) or ``--claim ID=THING`` options as claim -> thing."""
    claims = {}
    for item in items:
        claim, _, thing = item.partition("=")
        if not claim:
            raise GatewayError(f"invalid --claim {item!r}: expected ID or ID=THING")
        claims[claim] = thing or claim
    return claims


def run_devcloud(
    *,
    state_dir: Path,
    things: int,
    http: tuple[str, int],
    https: tuple[str, int],
    mqtt_port: int,
    claims: Mapping[str, str],
    fleet_templates: Mapping[str, str] | None = None,
    fleet_claims: Sequence[str] = (),
    mindconnect: tuple[str, str] = ("devtenant", "documentation"),
) -> int:
    configure_logging("auto", "info")
    tenant, shape = mindconnect
    if shape not in ANSWER_SHAPES:
        raise GatewayError(f"unknown agentCertificates answer shape {shape!r}")
    cloud = DevCloud(
        state_dir,
        mqtt_port=mqtt_port,
        http=http,
        https=https,
        claims=claims,
        fleet_templates=fleet_templates,
        mindconnect_tenant=tenant,
        mindconnect_shape="sample" if shape == "sample" else "documentation",
    )
    code = 0
    try:
        asyncio.run(_serve(cloud, things, fleet_claims))
    except* GatewayError as group:
        for exc in group.exceptions:
            log.error("devcloud_failed", error=str(exc))
        code = 1
    return code


async def _serve(cloud: DevCloud, things: int, fleet_claims: Sequence[str] = ()) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with cloud, asyncio.TaskGroup() as group:
        running = group.create_task(cloud.run(), name="devcloud")
        await cloud.ready.wait()
        batch = await cloud.create_things(things) if things else []
        for name in fleet_claims:
            folder = cloud.state_dir / "claims" / name
            await asyncio.to_thread(cloud.fleet.issue_claim, name, folder)
            print(f"fleet claim certificate {name!r}: {folder}/ (cert.pem, privkey.pem, ca.pem)")
        _print_instructions(cloud, batch)
        await stop.wait()
        running.cancel()
    print("devcloud stopped", flush=True)


def _print_instructions(cloud: DevCloud, batch: list[BatchThing]) -> None:
    lines = [
        "",
        "edge-gateway dev cloud is running:",
        f"  dashboard      {cloud.dashboard_url}   (plain HTTP, loopback only)",
        f"  MQTT           {cloud.broker.host}:{cloud.broker.port} (mutual TLS, CA "
        f"{cloud.ca.cert_path})",
        f"  Provision API  {cloud.provision_url}provision/checkin, /provision/getCerts,"
        " /provision/getCreds (HTTPS)",
        f"  artifacts      {cloud.provision_url}artifacts/<name> from "
        f"{cloud.provision.artifacts_dir}",
        f"  THiNX          {cloud.provision_url}device/register (owner "
        f"{cloud.thinx.dev_owner()[0]}, API key in {cloud.thinx.dev_owner()[1]}), MQTT "
        f"{cloud.thinx.broker.host}:{cloud.thinx.broker.port} (TLS, user name = udid)",
        f"  state          {cloud.state_dir}",
    ]
    side = cloud.mindconnect
    lines += [
        "",
        f"MindConnect side (tenant {side.tenant.name}, agent certificates in the "
        f"{side.tenant.answer_shape} shape):",
        f"  gateway URL    {cloud.provision_url.rstrip('/')} (token manager, agentCertificates)",
        f"  app id         {side.tenant.app_id} (secret: appSecret in {side.tenant.app_file})",
        f"  broker         {cloud.broker.host}:{cloud.broker.port}, client id "
        f"{side.tenant.name}_<name>, broker CA {side.broker_ca}",
        f"  tenant CA      {side.tenant.ca.cert_path}",
        f"  registration   {side.tenant.registration_code} (code for an own CA's verification "
        "certificate)",
        f"  agents         {cloud.dashboard_url}#agent={side.tenant.name}_<name>",
    ]
    if batch:
        program = command_prefix()
        noun = "thing; its folder holds" if len(batch) == 1 else "things; each folder holds"
        lines += [
            "",
            f"{len(batch)} {noun} cert.pem, privkey.pem, ca.pem (the broker's CA, here the "
            "dev CA, as in the Thing API guide's layout) and gateway.yaml.",
            "",
        ]
        lines += ["Run a gateway on mock GPIO for each (one terminal each):"]
        lines += [f"  {program} run --mock-gpio -c {_quoted(thing.config)}" for thing in batch]
        config = _quoted(batch[0].config)
        lines += ["", f"Then, from another terminal (for {batch[0].name}):"]
        lines += [f"  {program} status -c {config}"]
        lines += [f"  {program} mock set button true -c {config}"]
        lines += ["", f"--- {batch[0].config} ---", batch[0].config.read_text().rstrip()]
    lines += ["", "Press Ctrl+C to stop.", ""]
    print("\n".join(lines), flush=True)


def _quoted(path: Path) -> str:
    return shlex.quote(str(path))
