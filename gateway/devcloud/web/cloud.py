"""The whole local dev cloud in one object: CA, mosquitto, shadow service, dashboard, Provision API.

``async with DevCloud(state_dir) as cloud:`` issues certificates and starts mosquitto and both
HTTP servers; ``await cloud.run()`` (a task of the caller's ``TaskGroup``) runs the shadow service
and the dashboard's feed until cancelled; ``cloud.ready`` is set once both are subscribed.
Everything persistent (CA, certificates, shadows, claims, offers, artifacts) is in ``state_dir``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shlex
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import structlog
from aiohttp import web

from gateway.config import GatewayConfig, load_config
from gateway.core.atomicfile import write_atomic
from gateway.core.values import codec_for
from gateway.devcloud.broker import MosquittoBroker
from gateway.devcloud.fleet import FleetResponder
from gateway.devcloud.mindconnect import (
    DEFAULT_TENANT,
    AnswerShape,
    MindConnectSide,
    MindConnectTenant,
    add_mindconnect_routes,
)
from gateway.devcloud.pki import DevCA, DevCloudError
from gateway.devcloud.pki import is_ip as pki_is_ip
from gateway.devcloud.provision import ProvisionService, provision_app, server_ssl_context
from gateway.devcloud.service import ShadowService
from gateway.devcloud.thinx import ThinxBroker, ThinxService, thinx_app
from gateway.devcloud.web.dashboard import DashboardGuard, dashboard_app
from gateway.devcloud.web.hub import DashboardHub

__all__ = [
    "BatchThing",
    "DevCloud",
    "command_prefix",
    "controls_for",
    "create_thing_batch",
    "parse_address",
]

DEFAULT_HTTP: Final = ("127.0.0.1", 8080)
DEFAULT_HTTPS: Final = ("127.0.0.1", 8443)
DISCOVERY_FILE: Final = "devcloud.json"
_HTTP_SHUTDOWN_S: Final = 2.0
# The devices of a batch thing: the demo's mock-GPIO set (any pins work on mock GPIO).
_BATCH_DEVICES: Final = """\
  led:    {type: LED, pin: 17}
  relay:  {type: OutputDevice, pin: 27, active_high: false}
  fan:    {type: PWMLED, pin: 18}
  servo:  {type: Servo, pin: 12}
  button: {type: Button, pin: 4, pull_up: true, bounce_ms: 20}
  motion: {type: MotionSensor, pin: 23}
"""

log = structlog.get_logger()
_T = TypeVar("_T")


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` or ``:PORT`` (IPv6 as ``[::1]:8080``) -> (host, port)."""
    host, port = text, default_port
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        host = inside
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, raw = text.partition(":")
        port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return host or DEFAULT_HTTP[0], port


def controls_for(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    """Dashboard control hints per shadow key, from a gateway config's devices."""
    hints: dict[str, dict[str, Any]] = {}
    for name, device in config.devices.items():
        codec = codec_for(device)
        hints[name] = {
            "kind": codec.kind,
            "writable": codec.writable,
            "low": codec.low,
            "high": codec.high,
        }
    return hints


def command_prefix() -> str:
    """How to call edge-gateway as this process was started: the ``edge-gateway`` script beside
    this interpreter (a virtualenv's ``bin/``, which need not be on ``PATH``), else
    ``python -m gateway`` with this interpreter; printed commands then work as printed."""
    script = Path(sys.executable).parent / "edge-gateway"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m gateway"


@dataclass(frozen=True)
class BatchThing:
    """One thing of a batch: its folder holds cert.pem, privkey.pem, gateway.yaml and ca.pem,
    the broker's CA as in Managed IoT Cloud's layout (the dev CA signs the broker's certificate
    as well as the things')."""

    name: str
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "gateway.yaml"


def create_thing_batch(
    ca: DevCA, directory: Path, names: Sequence[str], *, host: str, port: int
) -> list[BatchThing]:
    """Folders with a certificate, key, CA and a ready-to-run mock-GPIO config (blocking).

    An existing folder keeps its certificate; its config is rewritten (the port may change).
    """
    batch = []
    program = command_prefix()
    for name in names:
        folder = directory / name
        if not (folder / "cert.pem").exists():
            ca.issue(name, folder)
        config = textwrap.dedent(
            f"""\
            # Ready to run: {program} run --mock-gpio -c {shlex.quote(str(folder / "gateway.yaml"))}
            thing: {name}
            mqtt:
              host: {host}
              port: {port}
              ca: ca.pem
              cert: cert.pem
              key: privkey.pem
              keepalive_s: 30
            gpio: {{pin_factory: mock}}
            state_dir: state
            admin_socket: {folder / "admin.sock"}
            devices:
            """
        )
        write_atomic(folder / "gateway.yaml", (config + _BATCH_DEVICES).encode(), 0o644)
        batch.append(BatchThing(name, folder))
    return batch


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise DevCloudError("HTTP server has no TCP address")


class DevCloud:
    """The local dev cloud (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        mqtt_host: str = "127.0.0.1",
        mqtt_port: int = 0,
        http: tuple[str, int] = DEFAULT_HTTP,
        https: tuple[str, int] = DEFAULT_HTTPS,
        claims: Mapping[str, str] | None = None,
        port_fallback: bool = False,
        fleet_templates: Mapping[str, str] | None = None,
        mindconnect_tenant: str = DEFAULT_TENANT,
        mindconnect_shape: AnswerShape = "documentation",
    ) -> None:
        self.state_dir = state_dir.resolve()
        self._mqtt = (mqtt_host, mqtt_port)
        self._http = http
        self._https = https
        self._claims = dict(claims or {})
        self._port_fallback = port_fallback
        self._runners: list[web.AppRunner] = []
        self._ca: DevCA | None = None
        self._broker: MosquittoBroker | None = None
        self._service: ShadowService | None = None
        self._hub: DashboardHub | None = None
        self._provision: ProvisionService | None = None
        self._fleet_templates = dict(fleet_templates or {})
        self._fleet: FleetResponder | None = None
        self._thinx: ThinxService | None = None
        self._mindconnect_options = (mindconnect_tenant, mindconnect_shape)
        self._mindconnect: MindConnectSide | None = None
        self._guard = DashboardGuard()
        self.dashboard_port = 0
        self.provision_port = 0
        self.ready = asyncio.Event()

    # --- accessors (valid once started) ---------------------------------------------------------

    @property
    def ca(self) -> DevCA:
        return _started(self._ca)

    @property
    def broker(self) -> MosquittoBroker:
        return _started(self._broker)

    @property
    def hub(self) -> DashboardHub:
        return _started(self._hub)

    @property
    def provision(self) -> ProvisionService:
        return _started(self._provision)

    @property
    def fleet(self) -> FleetResponder:
        """The fleet-provisioning responder (CreateCertificateFromCsr, RegisterThing)."""
        return _started(self._fleet)

    @property
    def thinx(self) -> ThinxService:
        """The THiNX server (device API on the Provision API's HTTPS port, its own broker)."""
        return _started(self._thinx)

    @property
    def mindconnect(self) -> MindConnectSide:
        """The MindConnect side: tenant, store of what agents sent, commands."""
        return _started(self._mindconnect)

    @property
    def service(self) -> ShadowService:
        return _started(self._service)

    @property
    def dashboard_url(self) -> str:
        return f"http://{_url_host(self._http[0])}:{self.dashboard_port}/"

    @property
    def dashboard_token(self) -> str:
        """This run's dashboard token (the page carries it; API changes must send it back)."""
        return self._guard.token

    @property
    def provision_url(self) -> str:
        return f"https://{_url_host(self._https[0])}:{self.provision_port}/"

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        state = self.state_dir
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
        self._ca = ca = await asyncio.to_thread(DevCA.load_or_create, state / "ca")
        self._broker = broker = MosquittoBroker(
            state / "broker", ca, host=self._mqtt[0], port=self._mqtt[1]
        )
        tenant_name, shape = self._mindconnect_options
        tenant = await asyncio.to_thread(
            MindConnectTenant, state / "mindconnect", tenant=tenant_name, answer_shape=shape
        )
        for ca_cert in (tenant.ca.cert_path, *tenant.own_cas()):
            broker.add_mindconnect_tenant(tenant.name, ca_cert)
        await asyncio.to_thread(broker.start)
        self._mindconnect = MindConnectSide(tenant, broker)
        self._service = ShadowService(
            broker.host,
            broker.port,
            broker.credentials(broker.service_identity),
            state_file=state / "shadows.json",
        )
        admin = broker.credentials(broker.admin_identities[0])
        self._hub = hub = DashboardHub(broker.host, broker.port, admin, store=self._service.store)
        self._provision = provision = ProvisionService(
            state / "provision",
            ca,
            endpoint=broker.host,
            port=broker.port,
            claims=self._claims,
            listener=hub.record,
        )
        await asyncio.to_thread(provision.prepare)
        self._fleet = fleet = FleetResponder(
            state / "provision",
            broker,
            ca,
            templates=self._fleet_templates,
            listener=hub.record,
        )
        await asyncio.to_thread(fleet.prepare)
        thinx_port = self._mqtt[1] + 1 if self._mqtt[1] else 0  # 8884 beside 8883
        thinx_broker = ThinxBroker(state / "thinx-broker", ca, host=self._mqtt[0], port=thinx_port)
        self._thinx = ThinxService(state / "thinx", thinx_broker, listener=hub.record_thinx)
        await asyncio.to_thread(self._thinx.prepare)
        await asyncio.to_thread(self._thinx.dev_owner)
        await asyncio.to_thread(thinx_broker.start)
        https_host = self._https[0]
        is_ip = pki_is_ip(https_host)
        server = await asyncio.to_thread(
            ca.issue,
            "devcloud-https",
            state / "https",
            server=True,
            dns_names=() if is_ip else (https_host,),
            ip_addresses=(https_host,) if is_ip else (),
        )
        tls = await asyncio.to_thread(server_ssl_context, server)
        side = self.mindconnect
        side.store.listeners.append(
            lambda client_id, _kind: hub.broadcast(
                {"type": "mindconnect", "agent": side.store.view(client_id)}
            )
        )
        dashboard = dashboard_app(hub, self._guard, mindconnect=side)
        self.dashboard_port = await self._serve(dashboard, self._http, None)
        # Until now the guard refused every request: it only trusts the address it listens on.
        self._guard.bind(self._http[0], self.dashboard_port)
        apis = thinx_app(self._thinx, provision_app(provision))  # one HTTPS port for all
        # Insights Hub's gateway (token manager, agentCertificates) on the same HTTPS address.
        add_mindconnect_routes(apis, self.mindconnect)
        self.provision_port = await self._serve(apis, self._https, tls)
        await asyncio.to_thread(self._write_discovery)
        log.info(
            "devcloud_started",
            dashboard=self.dashboard_url,
            provision=self.provision_url,
            mqtt_port=broker.port,
        )

    async def _serve(self, app: web.Application, address: tuple[str, int], tls: Any) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_HTTP_SHUTDOWN_S)
        await runner.setup()
        self._runners.append(runner)
        host, port = address
        try:
            await web.TCPSite(runner, host, port, ssl_context=tls).start()
        except OSError as exc:
            if not (self._port_fallback and exc.errno == errno.EADDRINUSE):
                raise DevCloudError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
            log.warning("devcloud_port_in_use", host=host, port=port)
            await web.TCPSite(runner, host, 0, ssl_context=tls).start()
        return _bound_port(runner)

    async def _stop(self) -> None:
        if self._hub is not None:
            self._hub.close_streams()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._broker is not None:
            await asyncio.to_thread(self._broker.stop)
        if self._thinx is not None:
            await asyncio.to_thread(self._thinx.broker.stop)

    async def run(self) -> None:
        """Run the shadow service and the dashboard feed until cancelled."""
        service_ready, hub_ready, fleet_ready = asyncio.Event(), asyncio.Event(), asyncio.Event()
        mindconnect_ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.service.run(ready=service_ready), name="devcloud_shadow")
            group.create_task(self.fleet.run(ready=fleet_ready), name="devcloud_fleet")
            thinx_ready = asyncio.Event()
            group.create_task(self.thinx.run(ready=thinx_ready), name="devcloud_thinx")
            group.create_task(self.thinx.watch_pushes(), name="devcloud_thinx_pushes")
            group.create_task(
                self.mindconnect.run(ready=mindconnect_ready), name="devcloud_mindconnect"
            )
            await fleet_ready.wait()
            await thinx_ready.wait()
            await mindconnect_ready.wait()
            # The dashboard seeds from the store, which the service restores from disk first.
            await service_ready.wait()
            group.create_task(self.hub.run(ready=hub_ready), name="devcloud_dashboard_feed")
            await hub_ready.wait()
            self.ready.set()

    # --- things ---------------------------------------------------------------------------------

    async def create_things(self, count: int, prefix: str = "thing") -> list[BatchThing]:
        """A batch of ``count`` things under ``things/``, known to the dashboard."""
        names = [f"{prefix}-{index:03d}" for index in range(1, count + 1)]
        batch = await asyncio.to_thread(
            create_thing_batch,
            self.ca,
            self.state_dir / "things",
            names,
            host=self.broker.host,
            port=self.broker.port,
        )
        for thing in batch:
            config = await asyncio.to_thread(load_config, thing.config)
            self.hub.add_thing(thing.name, controls_for(config))
        return batch

    def _write_discovery(self) -> None:
        admin = self.broker.credentials(self.broker.admin_identities[0])
        info = {
            "host": self.broker.host,
            "port": self.broker.port,
            "ca": str(admin.ca),
            "cert": str(admin.cert),
            "key": str(admin.key),
            "dashboard": self.dashboard_url,
            "provision": self.provision_url,
            "thinx": {
                "url": self.provision_url.rstrip("/"),
                "owner": self.thinx.dev_owner()[0],
                "api_key_file": str(self.thinx.dev_owner()[1]),
                "mqtt_host": self.thinx.broker.host,
                "mqtt_port": self.thinx.broker.port,
                "ca": str(self.ca.cert_path),
            },
        }
        write_atomic(self.state_dir / DISCOVERY_FILE, json.dumps(info, indent=2).encode(), 0o600)


def _started(value: _T | None) -> _T:
    if value is None:
        raise DevCloudError("the dev cloud is not started (use 'async with DevCloud(...)')")
    return value


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
