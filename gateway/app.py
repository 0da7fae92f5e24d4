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
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from gateway import __version__
from gateway.adapters.gpio import GpiozeroBank, make_pin_factory
from gateway.adapters.mqtt import (
    AiomqttConnector,
    MqttSettings,
    Will,
)
from gateway.admin import serve_admin
from gateway.backoff import Backoff
from gateway.config import (
    OUTPUT_CONFIGS,
    SENSOR_CONFIGS,
    BinaryOutputConfig,
    GatewayConfig,
    Mcp3008Config,
    SystemSensorConfig,
    error_reason_chars,
    is_output,
)
from gateway.connection import ConnectionLoop, ReloadOutcome
from gateway.engine import DeviceEngine
from gateway.errors import ConfigError, GatewayError
from gateway.exitcodes import EXIT_RESTART_FOR_UPDATE
from gateway.metrics import certificate_expiry, serve_metrics
from gateway.ota import Updater
from gateway.outbox import Change, Outbox, OutboxWriter
from gateway.ports import DeviceBank, MqttConnector
from gateway.reconcile import sensor_changed
from gateway.reload import ReloadPlan, files_digest, keep_restart_only, plan_reload, tls_files
from gateway.renewal import (
    CERT_EXPIRES_KEY,
    RenewalHooks,
    Renewer,
    check_credentials,
    warn_if_expiring,
)
from gateway.rules import Behaviours, Follow, FollowRules, Interlocks
from gateway.sdnotify import Notifier
from gateway.shadow import ShadowSync
from gateway.values import JsonValue, NativeValue, ValueCodec, codec_for, initial_value

log = structlog.get_logger()

SHUTDOWN_TIMEOUT_S = 4.0  # inside the 5 s users (and systemd's stop job) are promised
STATUS_INTERVAL_S = 1.0  # how often the systemd STATUS= line is refreshed (sent when changed)
# Supervised tasks that may end while the gateway is healthy (no sensors; metrics port busy).
MAY_FINISH = frozenset(
    {"sensor_poller", "metrics_http", "cert_renewal", "update_checker", "ota_health"}
)


def mqtt_settings(config: GatewayConfig) -> MqttSettings:
    mqtt = config.mqtt
    return MqttSettings(
        host=mqtt.host,
        port=mqtt.port,
        client_id=config.thing,
        ca=mqtt.ca,
        cert=mqtt.cert,
        key=mqtt.key,
        keepalive_s=mqtt.keepalive_s,
        connect_timeout_s=mqtt.connect_timeout_s,
        # The broker says "offline" (retained) for us when the link dies without a goodbye.
        will=Will(config.status_topic, b"offline", retain=True),
    )


def behaviours_for(config: GatewayConfig) -> Behaviours:
    """Interlocks, follows, pulses and fail-safe values from the config, in device terms."""
    follows = []
    pulses: dict[str, float] = {}
    failsafe: dict[str, tuple[float, object]] = {}
    for name, device in config.devices.items():
        if not isinstance(device, OUTPUT_CONFIGS):
            continue
        if device.follow is not None:
            follows.append(Follow(name, device.follow.device, device.follow.mode))
        if isinstance(device, BinaryOutputConfig) and device.pulse_ms is not None:
            pulses[name] = device.pulse_ms / 1000
        if device.on_disconnect is not None:
            value = codec_for(device).parse_desired(device.on_disconnect.value)
            failsafe[name] = (device.on_disconnect.after_s, value)
    return Behaviours(
        interlocks=Interlocks.of(config.interlock_groups),
        follows=FollowRules(tuple(follows)),
        pulses_s=pulses,
        failsafe=failsafe,
    )


def codecs_for(config: GatewayConfig) -> dict[str, ValueCodec]:
    return {name: codec_for(device) for name, device in config.devices.items()}


def min_intervals_for(config: GatewayConfig) -> dict[str, float]:
    return {
        name: getattr(device, "min_interval_ms", 0) / 1000
        for name, device in config.devices.items()
        if getattr(device, "min_interval_ms", 0)
    }


def engine_options(config: GatewayConfig) -> dict[str, Any]:
    """The device core's settings from a config (for building it and for reloads)."""
    return {
        "codecs": codecs_for(config),
        "behaviours": behaviours_for(config),
        "min_intervals_s": min_intervals_for(config),
    }


def shadow_options(config: GatewayConfig) -> dict[str, Any]:
    """The shadow link's settings from a config (for building it and for reloads)."""
    return {
        "thing": config.thing,
        "shadow": config.shadow,
        "codecs": codecs_for(config),
        "restore": frozenset(
            name
            for name, device in config.devices.items()
            if is_output(device) and getattr(device, "restore", False)
        ),
        "event_devices": frozenset(n for n, d in config.devices.items() if d.events),
        "events_topic": config.event_topic,
        "status_topic": config.status_topic,
        "error_reason_chars": error_reason_chars(config),
    }


def shutdown_values(config: GatewayConfig) -> dict[str, NativeValue]:
    """What each output is driven to at a clean stop: on_shutdown, else its initial value."""
    values: dict[str, NativeValue] = {}
    for name, device in config.devices.items():
        if not isinstance(device, OUTPUT_CONFIGS):
            continue
        if device.on_shutdown is not None:
            values[name] = codec_for(device).parse_desired(device.on_shutdown)
        elif (initial := initial_value(device)) is not None:
            values[name] = initial
    return values


def backoff_for(config: GatewayConfig) -> Backoff:
    policy = config.mqtt.reconnect
    return Backoff(policy.min_s, policy.max_s, policy.reset_after_s)


def outbox_for(config: GatewayConfig) -> Outbox:
    settings = config.outbox
    return Outbox(
        config.state_dir / "outbox.sqlite3",
        max_events=settings.max_events,
        max_bytes=settings.max_bytes,
        sync=settings.sync,
    )


@dataclass(frozen=True)
class Rewiring:
    """How a config reload rebuilds the parts it replaces (``build_gateway`` supplies it)."""

    load_config: Callable[[], GatewayConfig]
    make_bank: Callable[[GatewayConfig], DeviceBank]
    make_connector: Callable[[GatewayConfig], MqttConnector]


class Gateway:
    """A configured gateway; ``run()`` until stopped."""

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
    ) -> None:
        self.config = config
        self.bank = bank
        self.outbox = outbox or outbox_for(config)
        self.stop_event = asyncio.Event()
        self.admin_ready = asyncio.Event()
        # The device core, and the shadow link it reports through; a reload reconfigures both.
        self.engine = DeviceEngine(bank=bank, **engine_options(config))
        self.writer = OutboxWriter(self.outbox, self._on_persisted)
        self.shadow = ShadowSync(
            bank=bank,
            outbox=self.outbox,
            writer=self.writer,
            engine=self.engine,
            **shadow_options(config),
        )
        # MQTT sessions one at a time; reloads, renewed credentials and stop are its commands.
        self.connection = ConnectionLoop(
            connector, backoff or backoff_for(config), self.shadow.run_session
        )
        self.rewiring = rewiring
        self.notifier = notifier or Notifier({})  # no NOTIFY_SOCKET: every message a no-op
        self.reload_counts = {"reloads_applied": 0, "reloads_rejected": 0}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._reload_requested = asyncio.Event()
        self._reloading = False
        self._tls_digest = ""
        self._cert_expiry: float | None = None
        self.exit_code = 0  # EXIT_RESTART_FOR_UPDATE after an update switched slots
        self.updater = Updater(
            config,
            report=partial(self.shadow.report_gateway_status, "ota"),
            healthy=lambda: self.shadow.connected and self.shadow.synced.is_set(),
            restart=self._restart_for_update,
        )

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

    def stop(self) -> None:
        self.stop_event.set()
        self.connection.stop()

    def _restart_for_update(self) -> None:
        """Stop cleanly and exit 75 so systemd starts whatever ``current`` now points to."""
        self.exit_code = EXIT_RESTART_FOR_UPDATE
        self.stop()

    def request_reload(self) -> None:
        """Re-read the config soon (the SIGHUP handler)."""
        self._reload_requested.set()

    def _drive_shutdown_values(self) -> None:
        """After the final report: leave each output in its safe state (on_shutdown/initial)."""
        for name, value in shutdown_values(self.config).items():
            try:
                self.bank.write(name, value)
            except GatewayError as exc:
                log.warning("shutdown_value_failed", device=name, error=str(exc))

    def _on_input(self, name: str, value: JsonValue, observed_at: float) -> None:
        self.engine.on_input(name, value, observed_at)

    def _on_persisted(self, changes: list[Change]) -> None:
        self.shadow.on_persisted(changes)

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._group is not None
        task = self._group.create_task(coro, name=name)
        self._tasks[name] = task
        return task

    def healthy(self) -> bool:
        """Every supervised task is still running (the ones allowed to end aside)."""
        return bool(self._tasks) and all(
            not task.done() or name in MAY_FINISH for name, task in self._tasks.items()
        )

    async def run(self) -> None:
        """Open the devices, then sync until ``stop()``; devices are closed on the way out."""
        # Certificates first: a bad pair fails here, before any pin is touched.
        health = await asyncio.to_thread(check_credentials, self.config)
        expiring = warn_if_expiring(health, str(self.config.mqtt.cert))
        if expiring is not None:
            self.shadow.report_gateway_status(CERT_EXPIRES_KEY, expiring)
        await self.connector.prepare()
        await asyncio.to_thread(self.outbox.open)
        self.shadow.recover()
        self.bank.open(self._on_input)
        self.engine.link_down()  # no link is up until the first connect: fail-safe timers run
        try:
            self.shadow.prime(await self._read_all())
            log.info(
                "gateway_started",
                version=__version__,
                devices=len(self.config.devices),
                mock_gpio=self.bank.is_mock,
            )
            self._tls_digest, self._cert_expiry = await asyncio.to_thread(_tls_facts, self.config)
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._start(self.engine.run(), "device_engine")
                connection = self._start(self.connection.run(), "mqtt_connection")
                self._start(self._poll_sensors(), "sensor_poller")
                admin = self._start(
                    serve_admin(self.config.admin_socket, self._admin, self.admin_ready),
                    "admin_socket",
                )
                self._start(self._reload_loop(), "config_reloader")
                if self.config.metrics is not None:
                    host, port = self.config.metrics.listen
                    self._start(serve_metrics(host, port, self.status), "metrics_http")
                self._start(self._systemd_loop(), "systemd_notify")
                self._start(self.writer.run(), "outbox_writer")
                await self.updater.load()
                self._start(self.updater.run_checkins(), "update_checker")
                self._start(self.updater.watch_health(), "ota_health")
                if self.config.provision is not None and self.config.certs.renew_before_days:
                    self._start(self._renewer().run(), "cert_renewal")
                await self.stop_event.wait()
                log.info("gateway_stopping")
                self.notifier.stopping()
                self._tasks["sensor_poller"].cancel()
                try:
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                        await asyncio.shield(connection)
                except TimeoutError:
                    log.warning("shutdown_timed_out", timeout_s=SHUTDOWN_TIMEOUT_S)
                    connection.cancel()
                admin.cancel()
                for task in self._tasks.values():
                    task.cancel()
        finally:
            self._group = None
            self._drive_shutdown_values()
            self.bank.close()
            await asyncio.to_thread(self.writer.drain)
            await asyncio.to_thread(self.outbox.close)
            log.info("gateway_stopped")

    # -- systemd ---------------------------------------------------------------------------------

    def status_line(self) -> str:
        """One line for ``systemctl status`` (STATUS=)."""
        if self.stop_event.is_set():
            return "stopping"
        if self._reloading:
            return "reloading the configuration"
        mqtt = self.config.mqtt
        if self.shadow.connected:
            state = f"connected to {mqtt.host}:{mqtt.port}"
            state += ", shadow synced" if self.shadow.synced.is_set() else ", syncing the shadow"
        elif self.reconnects:
            state = f"disconnected, retrying {mqtt.host}:{mqtt.port} ({self.reconnects} retries)"
        else:
            state = f"connecting to {mqtt.host}:{mqtt.port}"
        line = f"{state}; {len(self.config.devices)} devices"
        if errors := len(self.shadow.reconciler.errors):
            line += f", {errors} with errors"
        return line

    async def _systemd_loop(self) -> None:
        """READY=1 once up, STATUS= when it changes, WATCHDOG=1 while healthy.

        A ping needs this task to run, so a blocked event loop stops the pings by itself; a
        finished supervised task withholds them, and systemd restarts the service."""
        loop = asyncio.get_running_loop()
        interval = self.notifier.watchdog_interval_s
        next_ping = loop.time()
        ready_sent = False
        last_status = ""
        while True:
            now = loop.time()
            line = self.status_line()
            if not ready_sent and self.first_attempt.is_set() and self.admin_ready.is_set():
                self.notifier.ready(line)
                log.info("service_ready", status=line)
                ready_sent = True
                last_status = line
            elif line != last_status and not self._reloading:
                self.notifier.status(line)
                last_status = line
            if interval is not None and now >= next_ping:
                if now - next_ping > interval:
                    log.warning("event_loop_stalled", late_s=round(now - next_ping, 3))
                if self.healthy():
                    self.notifier.watchdog()
                else:
                    ended = sorted(n for n, t in self._tasks.items() if t.done())
                    log.error("watchdog_withheld", ended_tasks=ended)
                next_ping = now + interval
            wait = STATUS_INTERVAL_S
            if interval is not None:
                wait = min(wait, max(0.0, next_ping - loop.time()))
            await asyncio.sleep(wait)

    # -- reload ----------------------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Re-read and apply the config; on any problem keep the running one. True if applied."""
        if self.rewiring is None:
            log.warning("config_reload_unavailable", reason="started without a config file")
            return False
        rewiring = self.rewiring
        self._reloading = True
        self.notifier.reloading()
        log.info("config_reload_started")
        try:

            def load() -> tuple[GatewayConfig, str, float | None]:
                new = rewiring.load_config()
                return (new, *_tls_facts(new))

            try:
                new, digest, expiry = await asyncio.to_thread(load)
            except ConfigError as exc:
                self.reload_counts["reloads_rejected"] += 1
                log.error("config_reload_rejected", problems=exc.problems)
                return False
            plan = plan_reload(
                self.config, new, old_tls_digest=self._tls_digest, new_tls_digest=digest
            )
            if plan.restart_only:
                log.warning("config_reload_needs_restart", keys=list(plan.restart_only))
            new = keep_restart_only(self.config, new)
            if plan.restart_session:
                # Applied by the connection loop between two sessions.
                if not await self.connection.reload(partial(self._swap, new, plan)):
                    self.reload_counts["reloads_rejected"] += 1
                    return False
            else:
                self.config = new
            self._tls_digest, self._cert_expiry = digest, expiry
            self.reload_counts["reloads_applied"] += 1
            log.info(
                "config_reloaded",
                devices_changed=sorted(plan.devices_changed),
                session_restarted=plan.restart_session,
                reconnected=plan.reconnect,
            )
            return True
        finally:
            self._reloading = False
            self.notifier.ready(self.status_line())

    async def _swap(self, new: GatewayConfig, plan: ReloadPlan) -> ReloadOutcome:
        """Reconfigure the devices, the device core and the shadow link (no session runs)."""
        assert self.rewiring is not None
        old_values = dict(self.engine.values)
        poller = self._tasks.get("sensor_poller")
        if poller is not None:
            poller.cancel()
            await asyncio.wait({poller})
        try:
            if plan.devices_changed:
                self.bank = self._reopen(new, old_values, plan.devices_changed)
            self.engine.configure(bank=self.bank, **engine_options(new))
            self.shadow.configure(**shadow_options(new))
            self.config = new
            self.engine.prime(await self._read_all())
            if plan.reconnect:
                self.connection.connector = self.rewiring.make_connector(new)
            return ReloadOutcome(applied=True, reconnect=plan.reconnect)
        except GatewayError as exc:
            log.error("config_reload_failed", error=str(exc))
            # Back to the running config's devices; failing here too ends the gateway.
            self.bank = self._reopen(self.config, old_values, frozenset(), may_fail=False)
            self.engine.configure(bank=self.bank, **engine_options(self.config))
            return ReloadOutcome(applied=False, reconnect=False)
        finally:
            self._start(self._poll_sensors(), "sensor_poller")

    def _reopen(
        self,
        config: GatewayConfig,
        values: Mapping[str, JsonValue],
        changed: frozenset[str],
        *,
        may_fail: bool = True,
    ) -> DeviceBank:
        """Close the bank and open ``config``'s devices; unchanged outputs keep their values."""
        assert self.rewiring is not None
        bank = self.rewiring.make_bank(config)
        self.bank.close()
        try:
            bank.open(self._on_input)
        except GatewayError:
            if may_fail:
                return self._reopen(self.config, values, frozenset(), may_fail=False)
            raise
        for name, device in config.devices.items():
            if name in changed or not is_output(device) or name not in values:
                continue
            try:
                bank.write(name, codec_for(device).parse_desired(values[name]))
            except GatewayError as exc:
                log.warning("output_not_restored", device=name, error=str(exc))
        return bank

    async def _read_all(self) -> dict[str, JsonValue]:
        values: dict[str, JsonValue] = {}
        for name, device in self.config.devices.items():
            if isinstance(device, SENSOR_CONFIGS):
                values[name] = await asyncio.to_thread(self.bank.read, name)
            else:
                values[name] = self.bank.read(name)
        return values

    # -- certificate renewal ---------------------------------------------------------------------

    def _renewer(self) -> Renewer:
        async def renewed() -> None:
            self._tls_digest, self._cert_expiry = await asyncio.to_thread(_tls_facts, self.config)

        return Renewer(
            RenewalHooks(
                config=lambda: self.config,
                reconnect=self.reconnect_with_current_files,
                report=self.shadow.report_gateway_status,
                renewed=renewed,
            )
        )

    def _fresh_connector(self) -> MqttConnector:
        if self.rewiring is not None:
            return self.rewiring.make_connector(self.config)
        return AiomqttConnector(mqtt_settings(self.config))

    async def reconnect_with_current_files(self) -> bool:
        """End the session and connect with a connector that re-reads the certificate files;
        True once it has connected within ``certs.connect_timeout_s``."""
        connector = self._fresh_connector()
        try:
            await connector.prepare()
        except GatewayError as exc:
            log.error("certificate_load_failed", error=str(exc))
            return False
        return await self.connection.switch_connector(
            connector, self.config.certs.connect_timeout_s
        )

    async def _poll_sensors(self) -> None:
        """Read each sensor on its own interval; report changes of at least ``min_change``."""
        sensors: dict[str, SystemSensorConfig | Mcp3008Config] = {
            name: device
            for name, device in self.config.devices.items()
            if isinstance(device, SENSOR_CONFIGS)
        }
        if not sensors:
            return
        loop = asyncio.get_running_loop()
        due = dict.fromkeys(sensors, loop.time())
        while True:
            name = min(due, key=due.__getitem__)
            await asyncio.sleep(max(0.0, due[name] - loop.time()))
            device = sensors[name]
            due[name] = loop.time() + device.interval_s
            try:
                value = await asyncio.to_thread(self.bank.read, name)
            except GatewayError as exc:
                log.warning("sensor_read_failed", device=name, error=str(exc))
                continue
            if sensor_changed(self.engine.values.get(name), value, device.min_change):
                self.engine.on_input(name, value, time.time())

    async def _admin(self, request: Mapping[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        if command == "status":
            return self.status()
        if command == "mock_set":
            if not self.bank.is_mock:
                raise GatewayError("refused: this gateway drives real GPIO, not mock pins")
            name = request.get("name")
            if not isinstance(name, str) or name not in self.config.devices:
                raise GatewayError(f"no device named {name!r}")
            self.bank.drive_mock_input(name, request.get("value"))
            return {"device": name, "value": request.get("value")}
        raise GatewayError(f"unknown command {command!r}")

    def status(self) -> dict[str, Any]:
        """The state ``edge-gateway status`` shows and the metrics endpoint exports."""
        days_left = None
        if self._cert_expiry is not None:
            days_left = round((self._cert_expiry - time.time()) / 86_400, 3)
        shadow = self.shadow.status()
        outbox = shadow.get("outbox", {})
        return {
            **shadow,
            "outbox_depth": outbox.get("events", 0) + outbox.get("reported", 0),
            "outbox_dropped_events": outbox.get("dropped_events", 0),
            "outbox_in_memory": self.outbox.degraded,
            "version": __version__,
            "mock_gpio": self.bank.is_mock,
            "reconnects": self.reconnects,
            "healthy": self.healthy(),
            "certificate_days_left": days_left,
            **self.updater.snapshot(),
            **self.reload_counts,
        }


def _tls_facts(config: GatewayConfig) -> tuple[str, float | None]:
    """A digest of the TLS files and the client certificate's expiry (blocking)."""
    return files_digest(tls_files(config)), certificate_expiry(config.mqtt.cert)


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

    mock = mock_gpio or config.mock_gpio
    factory = pin_factory or make_pin_factory("mock" if mock else config.gpio.pin_factory)
    mocks = mock_dir or config.state_dir / "mock"
    loop = asyncio.get_running_loop()

    def make_bank(current: GatewayConfig) -> DeviceBank:
        return GpiozeroBank(current.devices, factory, loop=loop, is_mock=mock, mock_dir=mocks)

    def make_connector(current: GatewayConfig) -> MqttConnector:
        return AiomqttConnector(mqtt_settings(current))

    rewiring = None
    if config_path is not None:
        rewiring = Rewiring(lambda: load_config(config_path), make_bank, make_connector)
    return Gateway(
        config,
        bank=make_bank(config),
        connector=make_connector(config),
        rewiring=rewiring,
        notifier=notifier,
    )


async def run_gateway(
    config: GatewayConfig, *, mock_gpio: bool = False, config_path: Path | None = None
) -> int:
    """Run until SIGTERM/SIGINT, reloading on SIGHUP; used by ``edge-gateway run``. Returns
    the exit code: 0, or EXIT_RESTART_FOR_UPDATE after an update or a rollback."""
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
