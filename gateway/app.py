"""Wiring: the one place that connects config, devices, MQTT, the shadow and the admin socket.

One ``asyncio.TaskGroup`` supervises the named tasks; SIGTERM/SIGINT set a stop event, the
shadow reports its final state, and everything is closed within ``SHUTDOWN_TIMEOUT_S``.

Under systemd (``Type=notify``) the ``systemd_notify`` task sends ``READY=1`` once the devices
are open, the admin socket listens and the first MQTT connection attempt has ended (connected
or not: a Pi that boots offline has still started), then ``STATUS=`` lines, and ``WATCHDOG=1``
every half ``WATCHDOG_USEC`` only while it gets to run (the event loop is responsive) and every
supervised task is alive. SIGHUP re-reads the config: a valid one is applied between shadow
sessions (changed devices re-created, MQTT reconnected only if its settings or certificate
files changed); an invalid one is logged and the running one kept.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import __version__
from gateway.cloudlinks import cloud_links
from gateway.config import GatewayConfig
from gateway.core.backoff import Backoff
from gateway.core.outbox import Change, Outbox, OutboxWriter
from gateway.core.ports import (
    CloudLink,
    DeviceBank,
    DeviceCore,
    GatewayFacts,
    LinkPlan,
    MqttConnector,
    MqttSession,
)
from gateway.core.values import JsonValue, codec_for
from gateway.devices.engine import DeviceEngine
from gateway.devices.gpio import GpiozeroBank, chosen_pin_factory, make_pin_factory
from gateway.devices.sensors import poll_sensors, read_all
from gateway.errors import GatewayError
from gateway.exitcodes import EXIT_RESTART_FOR_UPDATE
from gateway.links.connection import ConnectionLoop, NoShadowConnector
from gateway.links.mqtt import AiomqttConnector
from gateway.links.shadow.sync import ShadowSync
from gateway.ops.admin import serve_admin
from gateway.ops.logs import shared_processors
from gateway.ops.sdnotify import Notifier, notify_loop
from gateway.provisioning.renewal import (
    CERT_EXPIRES_KEY,
    RenewalHooks,
    Renewer,
    check_credentials,
    warn_if_expiring,
)
from gateway.reloading import ConfigReloader, Rewiring
from gateway.updates.ota import Updater
from gateway.wiring import (
    backoff_for,
    engine_options,
    mqtt_settings,
    outbox_for,
    shadow_options,
    shutdown_values,
    tls_facts,
)

if TYPE_CHECKING:  # imported when a 'credentials' block asks for it
    from gateway.credentials.service import AwsServices

log = structlog.get_logger()

SHUTDOWN_TIMEOUT_S = 4.0  # inside the 5 s users (and systemd's stop job) are promised
# Supervised tasks that may end while the gateway is healthy (no sensors; metrics port busy).
MAY_FINISH = frozenset(
    {
        "sensor_poller",
        "metrics_http",
        "cert_renewal",
        "update_checker",
        "ota_health",
        "credentials_http",
    }
)


class Gateway:
    """A configured gateway; ``run()`` until stopped.

    It supervises the named tasks of one ``TaskGroup``: the device core, the MQTT connection
    (shadow sessions), sensor polling, the admin socket, config reloads, metrics, systemd
    notification, the outbox writer, check-in/OTA and certificate renewal.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        bank: DeviceBank,
        connector: MqttConnector,
        backoff: Backoff | None = None,
        rewiring: Rewiring | None = None,
        notifier: Notifier | None = None,
        outbox: Outbox | None = None,
        extra_links: Callable[[DeviceCore], Sequence[LinkPlan]] | None = None,
    ) -> None:
        self.config = config
        self.bank = bank
        self.outbox = outbox or outbox_for(config)
        self.stop_event = asyncio.Event()
        self.admin_ready = asyncio.Event()
        # The device core, and the shadow link it reports through; a reload reconfigures both.
        self.engine = DeviceEngine(bank=bank, **engine_options(config))
        self.writer = OutboxWriter(self.outbox, self._on_persisted)
        # The cloud links: the shadow (when ``mqtt`` is configured), and any others configured
        # beside it (THiNX, MindConnect, ...), each with its own connection loop.
        self.links: dict[str, CloudLink] = {}
        self.shadow: ShadowSync | None = None
        if config.has_shadow:
            self.shadow = ShadowSync(
                shadow_options(config), engine=self.engine, outbox=self.outbox, writer=self.writer
            )
            self.links["shadow"] = self.shadow
        # The shadow's MQTT sessions one at a time; reloads, renewed credentials and stop are
        # its commands. Without the shadow the same loop holds idle "sessions", so reloads and
        # stop take the same path.
        self.connection = ConnectionLoop(
            connector,
            backoff or backoff_for(config),
            self.shadow.run_session if self.shadow is not None else idle_session,
        )
        self.extra_links = list(extra_links(self.engine) if extra_links else ())
        self.extra_connections: dict[str, ConnectionLoop] = {}
        for plan in self.extra_links:
            self.links[plan.name] = plan.link
            if plan.connector is not None:
                self.extra_connections[plan.name] = ConnectionLoop(
                    plan.connector, backoff_for(config), plan.link.run_session
                )
        self.rewiring = rewiring
        self.reloader = ConfigReloader(self)
        self.notifier = notifier or Notifier({})  # no NOTIFY_SOCKET: every message a no-op
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self.tls_digest = ""  # of the TLS files in use (a reload compares it)
        self.cert_expiry: float | None = None
        self.exit_code = 0  # EXIT_RESTART_FOR_UPDATE after an update switched slots
        self.updater = Updater(
            config,
            report=partial(self.report_gateway_status, "ota"),
            healthy=self.links_healthy,
            restart=self._restart_for_update,
        )
        # Temporary AWS credentials and log shipping (credentials:, and logging.cloudwatch,
        # which needs it): loaded only when configured, like the cloud links.
        self.aws: AwsServices | None = None
        if config.credentials is not None:
            from gateway.credentials.service import AwsServices

            self.aws = AwsServices(config, version=__version__, pre_chain=shared_processors())
        facts = GatewayFacts(
            # Without the shadow link there is no main link to be down, nor its error table.
            main_link_up=lambda: self.shadow is None or self.shadow.connected,
            gateway_errors=lambda: self.shadow is not None and bool(self.shadow.reconciler.errors),
            updater=self.updater,
        )
        for plan in self.extra_links:
            loop = self.extra_connections.get(plan.name)
            if plan.attach is not None:
                plan.attach(
                    facts if loop is None else replace(facts, reconnect_now=loop.reconnect_now)
                )

    def links_healthy(self) -> bool:
        """Every cloud link is connected (and the shadow synced): an update may stay."""
        if self.shadow is not None and not self.shadow.synced.is_set():
            return False
        return all(link.connected for link in self.links.values())

    @property
    def connector(self) -> MqttConnector:
        return self.connection.connector

    @property
    def backoff(self) -> Backoff:
        return self.connection.backoff

    @property
    def reconnects(self) -> int:
        return self.connection.reconnects

    @property
    def first_attempt(self) -> asyncio.Event:
        """Set once the first MQTT connection attempt has ended."""
        return self.connection.first_attempt

    @property
    def reload_counts(self) -> dict[str, int]:
        return self.reloader.counts

    def report_gateway_status(self, key: str, value: JsonValue) -> None:
        """One entry of the gateway's own status (OTA, certificate expiry), told every link."""
        for link in self.links.values():
            link.report_gateway_status(key, value)

    def stop(self) -> None:
        self.stop_event.set()
        self.connection.stop()
        for loop in self.extra_connections.values():
            loop.stop()

    def _restart_for_update(self) -> None:
        """Stop cleanly and exit 75 so systemd starts whatever ``current`` now points to."""
        self.exit_code = EXIT_RESTART_FOR_UPDATE
        self.stop()

    def request_reload(self) -> None:
        """Re-read the config soon (the SIGHUP handler)."""
        self.reloader.request()

    async def reload(self) -> bool:
        """Re-read and apply the config now; True if applied."""
        return await self.reloader.reload()

    def _drive_shutdown_values(self) -> None:
        """After the final report: leave each output in its safe state (on_shutdown/initial)."""
        for name, value in shutdown_values(self.config).items():
            try:
                self.bank.write(name, value)
            except GatewayError as exc:
                log.warning("shutdown_value_failed", device=name, error=str(exc))

    def _on_persisted(self, changes: list[Change]) -> None:
        if self.shadow is not None:
            self.shadow.on_persisted(changes)

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._group is not None
        task = self._group.create_task(coro, name=name)
        self._tasks[name] = task
        return task

    def start_sensor_poller(self) -> None:
        self._start(poll_sensors(self.config.devices, self.bank, self.engine), "sensor_poller")

    async def stop_sensor_poller(self) -> None:
        poller = self._tasks.get("sensor_poller")
        if poller is not None:
            poller.cancel()
            await asyncio.wait({poller})

    def healthy(self) -> bool:
        """Every supervised task is still running (the ones allowed to end aside)."""
        return bool(self._tasks) and all(
            not task.done() or name in MAY_FINISH for name, task in self._tasks.items()
        )

    async def run(self) -> None:
        """Open the devices, then sync until ``stop()``; devices are closed on the way out."""
        # Certificates first: a bad pair fails here, before any pin is touched.
        if self.config.mqtt is not None and self.config.mqtt.cert is not None:  # none: a password
            health = await asyncio.to_thread(check_credentials, self.config)
            expiring = warn_if_expiring(health, str(self.config.mqtt.cert))
            if expiring is not None:
                self.report_gateway_status(CERT_EXPIRES_KEY, expiring)
        await self.connector.prepare()
        for loop in self.extra_connections.values():
            await loop.connector.prepare()
        await asyncio.to_thread(self.outbox.open)
        if self.shadow is not None:
            await self.shadow.recover()
        # gpiozero may block opening devices: a thread, so the loop never waits on it.
        await asyncio.to_thread(self.bank.open, self.engine.on_input)
        self.engine.link_down()  # no link is up until the first connect: fail-safe timers run
        try:
            self.engine.prime(await read_all(self.config.devices, self.bank))
            log.info(
                "gateway_started",
                version=__version__,
                devices=len(self.config.devices),
                mock_gpio=self.bank.is_mock,
            )
            self.tls_digest, self.cert_expiry = await asyncio.to_thread(tls_facts, self.config)
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self._supervise()
        finally:
            self._group = None
            self._drive_shutdown_values()
            await asyncio.to_thread(self.bank.close)
            await asyncio.to_thread(self.writer.drain)
            await asyncio.to_thread(self.outbox.close)
            log.info("gateway_stopped")

    async def _supervise(self) -> None:
        """Start every named task, wait for stop, then end them within the shutdown bound."""
        self._start(self.engine.run(), "device_engine")
        connection = self._start(self.connection.run(), "mqtt_connection")
        connections = [connection]
        for name, loop in self.extra_connections.items():
            connections.append(self._start(loop.run(), f"{name}_connection"))
        for plan in self.extra_links:
            for task_name, make_task in plan.tasks.items():
                self._start(make_task(), f"{plan.name}_{task_name}")
        self.start_sensor_poller()
        admin = self._start(
            serve_admin(self.config.admin_socket, self._admin, self.admin_ready), "admin_socket"
        )
        self._start(self.reloader.run(), "config_reloader")
        if self.config.metrics is not None:
            from gateway.ops.metrics import serve_metrics  # loaded only when configured

            host, port = self.config.metrics.listen
            self._start(serve_metrics(host, port, self.status), "metrics_http")
        self._start(
            notify_loop(
                self.notifier,
                status_line=self.status_line,
                ready=lambda: self.first_attempt.is_set() and self.admin_ready.is_set(),
                healthy=self.healthy,
                ended_tasks=lambda: sorted(n for n, t in self._tasks.items() if t.done()),
                reloading=lambda: self.reloader.reloading,
            ),
            "systemd_notify",
        )
        self._start(self.writer.run(), "outbox_writer")
        await self.updater.load()
        self._start(self.updater.run_checkins(), "update_checker")
        self._start(self.updater.watch_health(), "ota_health")
        if self.config.provision is not None and self.config.certs.renew_before_days:
            self._start(renewer_for(self).run(), "cert_renewal")
        for name, coro in self.aws.tasks() if self.aws is not None else []:
            self._start(coro, name)
        await self.stop_event.wait()
        log.info("gateway_stopping")
        self.notifier.stopping()
        self._tasks["sensor_poller"].cancel()
        # Every link reports its final state and closes its session, within one bound.
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await asyncio.shield(asyncio.gather(*connections, return_exceptions=True))
        except TimeoutError:
            log.warning("shutdown_timed_out", timeout_s=SHUTDOWN_TIMEOUT_S)
            for task in connections:
                task.cancel()
        admin.cancel()
        for task in self._tasks.values():
            task.cancel()

    def status_line(self) -> str:
        """One line for ``systemctl status`` (STATUS=)."""
        if self.stop_event.is_set():
            return "stopping"
        if self.reloader.reloading:
            return "reloading the configuration"
        mqtt = self.config.mqtt
        states = []
        if self.shadow is not None and mqtt is not None:
            if self.shadow.connected:
                state = f"connected to {mqtt.host}:{mqtt.port}"
                synced = self.shadow.synced.is_set()
                state += ", shadow synced" if synced else ", syncing the shadow"
            elif self.reconnects:
                state = (
                    f"disconnected, retrying {mqtt.host}:{mqtt.port} ({self.reconnects} retries)"
                )
            else:
                state = f"connecting to {mqtt.host}:{mqtt.port}"
            states.append(state)
        for plan in self.extra_links:
            states.append(f"{plan.name} {'connected' if plan.link.connected else 'not connected'}")
        line = f"{', '.join(states)}; {len(self.config.devices)} devices"
        if self.shadow is not None and (errors := len(self.shadow.reconciler.errors)):
            line += f", {errors} with errors"
        return line

    async def _admin(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if request["cmd"] == "status":
            return self.status()
        if request["cmd"] == "mock_set":
            return drive_mock_input(self.bank, self.config, request)
        if request["cmd"] == "credentials":
            if self.aws is None:
                raise GatewayError("no 'credentials' block in this gateway's config")
            return self.aws.admin_credentials()
        raise GatewayError(f"unknown command {request['cmd']!r}")

    def status(self) -> dict[str, Any]:
        """The state ``edge-gateway status`` shows and the metrics endpoint exports."""
        days_left = None
        if self.cert_expiry is not None:
            days_left = round((self.cert_expiry - time.time()) / 86_400, 3)
        # Without the shadow link the device core's values are still the gateway's devices.
        devices: dict[str, Any] = {"devices": dict(self.engine.values)}
        shadow = self.shadow.status() if self.shadow is not None else devices
        outbox = shadow.get("outbox", {})
        return {
            **shadow,
            "outbox_depth": outbox.get("events", 0) + outbox.get("reported", 0),
            "outbox_dropped_events": outbox.get("dropped_events", 0),
            "outbox_in_memory": self.outbox.degraded,
            "outbox_in_memory_entries": self.outbox.in_memory_entries,
            "version": __version__,
            "mock_gpio": self.bank.is_mock,
            "reconnects": self.reconnects,
            "healthy": self.healthy(),
            "certificate_days_left": days_left,
            "certificate_expires_at": self.cert_expiry,
            **self.updater.snapshot(),
            **(self.aws.snapshot() if self.aws is not None else {}),
            **self.reload_counts,
            **({"links": self.links_status()} if self.extra_links else {}),
        }

    def links_status(self) -> dict[str, dict[str, Any]]:
        """Each link configured beside the shadow, as ``status`` shows it under ``links``."""
        links: dict[str, dict[str, Any]] = {}
        for plan in self.extra_links:
            links[plan.name] = plan.link.status()
            loop = self.extra_connections.get(plan.name)
            if loop is not None:
                links[plan.name]["reconnects"] = loop.reconnects
        return links


def drive_mock_input(
    bank: DeviceBank, config: GatewayConfig, request: Mapping[str, Any]
) -> dict[str, Any]:
    """The admin socket's ``mock_set``: simulate an input, on mock GPIO only."""
    if not bank.is_mock:
        raise GatewayError("refused: this gateway drives real GPIO, not mock pins")
    name = request.get("name")
    if not isinstance(name, str) or name not in config.devices:
        raise GatewayError(f"no device named {name!r}")
    bank.drive_mock_input(name, request.get("value"))
    return {"device": name, "value": request.get("value")}


def renewer_for(gateway: Gateway) -> Renewer:
    """Certificate renewal for ``gateway``: a renewed pair is tried on a fresh connection
    (through the connection loop's command), and the TLS facts are refreshed after it."""

    async def renewed() -> None:
        gateway.tls_digest, gateway.cert_expiry = await asyncio.to_thread(tls_facts, gateway.config)

    async def reconnect_with_current_files() -> bool:
        """Connect with a connector that re-reads the certificate files; True once it has
        connected within ``certs.connect_timeout_s``."""
        config = gateway.config
        if gateway.rewiring is not None:
            connector = gateway.rewiring.make_connector(config)
        else:
            connector = AiomqttConnector(mqtt_settings(config))
        try:
            await connector.prepare()
        except GatewayError as exc:
            log.error("certificate_load_failed", error=str(exc))
            return False
        return await gateway.connection.switch_connector(connector, config.certs.connect_timeout_s)

    return Renewer(
        RenewalHooks(
            config=lambda: gateway.config,
            reconnect=reconnect_with_current_files,
            report=gateway.report_gateway_status,
            renewed=renewed,
        )
    )


def build_gateway(
    config: GatewayConfig,
    *,
    mock_gpio: bool = False,
    config_path: Path | None = None,
    pin_factory: Any = None,
    mock_dir: Path | None = None,
    notifier: Notifier | None = None,
) -> Gateway:
    """The one composition function: a gateway for ``config`` with gpiozero devices and
    aiomqtt, wired as configured. ``pin_factory`` (e.g. a MockFactory a test drives) and
    ``mock_dir`` may be injected; with ``config_path`` a reload re-reads that file (new
    devices go on the same pin factory)."""
    from gateway.config import load_config

    # pin_factory: auto follows $GPIOZERO_PIN_FACTORY; =mock makes a mock-GPIO gateway.
    mock = mock_gpio or chosen_pin_factory(config.gpio.pin_factory) == "mock"
    factory = pin_factory or make_pin_factory("mock" if mock else config.gpio.pin_factory)
    mocks = mock_dir or config.state_dir / "mock"
    loop = asyncio.get_running_loop()

    def make_bank(current: GatewayConfig) -> DeviceBank:
        return GpiozeroBank(current.devices, factory, loop=loop, is_mock=mock, mock_dir=mocks)

    def make_connector(current: GatewayConfig) -> MqttConnector:
        if not current.has_shadow:
            return NoShadowConnector()
        return AiomqttConnector(mqtt_settings(current))

    rewiring = None
    if config_path is not None:
        rewiring = Rewiring(
            lambda: load_config(config_path, codec_for=codec_for), make_bank, make_connector
        )
    return Gateway(
        config,
        bank=make_bank(config),
        connector=make_connector(config),
        rewiring=rewiring,
        notifier=notifier,
        extra_links=lambda core: cloud_links(config, core),
    )


async def idle_session(session: MqttSession, stop: asyncio.Event) -> None:
    """The connection loop's "session" when no shadow link is configured: nothing to sync,
    only commands (reload, stop) to wait for."""
    await stop.wait()


async def run_gateway(
    config: GatewayConfig, *, mock_gpio: bool = False, config_path: Path | None = None
) -> int:
    """Run until SIGTERM/SIGINT, reloading on SIGHUP; used by ``edge-gateway run``. Returns
    the exit code: 0, or EXIT_RESTART_FOR_UPDATE after an update or a rollback."""
    if config.thing is not None:
        structlog.contextvars.bind_contextvars(thing=config.thing)
    gateway = build_gateway(
        config, mock_gpio=mock_gpio, config_path=config_path, notifier=Notifier()
    )
    loop = asyncio.get_running_loop()
    handlers: dict[signal.Signals, Callable[[], None]] = {
        signal.SIGTERM: gateway.stop,
        signal.SIGINT: gateway.stop,
        signal.SIGHUP: gateway.request_reload,
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    try:
        await gateway.run()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        gateway.notifier.close()
    return gateway.exit_code
