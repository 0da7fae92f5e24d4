"""Config reload (SIGHUP): re-read, decide (``reload.plan_reload``), and reconfigure in place.

A valid config is applied to the running parts: changed devices re-created (unchanged outputs
keep their values), the device core and the shadow link reconfigured, MQTT reconnected only if
its settings or certificate files changed. When the session must restart, the change is a
command for the connection loop, applied between two sessions. An invalid config is logged and
the running one kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import structlog

from gateway.config import GatewayConfig, is_output
from gateway.core.ports import DeviceBank, MqttConnector
from gateway.core.values import JsonValue, codec_for
from gateway.devices.engine import DeviceEngine
from gateway.devices.sensors import read_all
from gateway.errors import ConfigError, GatewayError
from gateway.links.connection import ConnectionLoop, ReloadOutcome
from gateway.links.shadow.sync import ShadowSync
from gateway.ops.reload import ReloadPlan, keep_restart_only, plan_reload
from gateway.ops.sdnotify import Notifier
from gateway.wiring import engine_options, shadow_options, tls_facts

log = structlog.get_logger()


@dataclass(frozen=True)
class Rewiring:
    """How a config reload builds the parts it replaces (``build_gateway`` supplies it)."""

    load_config: Callable[[], GatewayConfig]
    make_bank: Callable[[GatewayConfig], DeviceBank]
    make_connector: Callable[[GatewayConfig], MqttConnector]


class Reloadable(Protocol):
    """The running parts a reload reconfigures (the gateway)."""

    config: GatewayConfig
    bank: DeviceBank
    engine: DeviceEngine
    shadow: ShadowSync | None
    connection: ConnectionLoop
    rewiring: Rewiring | None
    notifier: Notifier
    tls_digest: str
    cert_expiry: float | None

    def status_line(self) -> str: ...

    async def stop_sensor_poller(self) -> None: ...

    def start_sensor_poller(self) -> None: ...


class ConfigReloader:
    """Applies reloads to one gateway's running parts."""

    def __init__(self, gateway: Reloadable) -> None:
        self._gateway = gateway
        self._requested = asyncio.Event()
        self.reloading = False
        self.counts = {"reloads_applied": 0, "reloads_rejected": 0}

    def request(self) -> None:
        """Re-read the config soon (the SIGHUP handler)."""
        self._requested.set()

    async def run(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Re-read and apply the config; on any problem keep the running one. True if applied."""
        gateway = self._gateway
        if gateway.rewiring is None:
            log.warning("config_reload_unavailable", reason="started without a config file")
            return False
        rewiring = gateway.rewiring
        self.reloading = True
        gateway.notifier.reloading()
        log.info("config_reload_started")
        try:

            def load() -> tuple[GatewayConfig, str, float | None]:
                new = rewiring.load_config()
                return (new, *tls_facts(new))

            try:
                new, digest, expiry = await asyncio.to_thread(load)
            except ConfigError as exc:
                self.counts["reloads_rejected"] += 1
                log.error("config_reload_rejected", problems=exc.problems)
                return False
            plan = plan_reload(
                gateway.config, new, old_tls_digest=gateway.tls_digest, new_tls_digest=digest
            )
            if plan.restart_only:
                log.warning("config_reload_needs_restart", keys=list(plan.restart_only))
            new = keep_restart_only(gateway.config, new)
            if plan.restart_session:
                # Applied by the connection loop between two sessions.
                if not await gateway.connection.reload(partial(self._swap, new, plan)):
                    self.counts["reloads_rejected"] += 1
                    return False
            else:
                gateway.config = new
            gateway.tls_digest, gateway.cert_expiry = digest, expiry
            self.counts["reloads_applied"] += 1
            log.info(
                "config_reloaded",
                devices_changed=sorted(plan.devices_changed),
                session_restarted=plan.restart_session,
                reconnected=plan.reconnect,
            )
            return True
        finally:
            self.reloading = False
            gateway.notifier.ready(gateway.status_line())

    async def _swap(self, new: GatewayConfig, plan: ReloadPlan) -> ReloadOutcome:
        """Reconfigure the devices, the device core and the shadow link (no session runs)."""
        gateway = self._gateway
        assert gateway.rewiring is not None
        old_values = dict(gateway.engine.values)
        await gateway.stop_sensor_poller()
        try:
            if plan.devices_changed:
                gateway.bank = await self._reopen(new, old_values, plan.devices_changed)
            gateway.engine.configure(bank=gateway.bank, **engine_options(new))
            if gateway.shadow is not None:
                gateway.shadow.configure(shadow_options(new))
            gateway.config = new
            gateway.engine.prime(await read_all(new.devices, gateway.bank))
            if plan.reconnect:
                gateway.connection.connector = gateway.rewiring.make_connector(new)
            return ReloadOutcome(applied=True, reconnect=plan.reconnect)
        except GatewayError as exc:
            log.error("config_reload_failed", error=str(exc))
            # Back to the running config's devices; failing here too ends the gateway.
            gateway.bank = await self._reopen(
                gateway.config, old_values, frozenset(), may_fail=False
            )
            gateway.engine.configure(bank=gateway.bank, **engine_options(gateway.config))
            return ReloadOutcome(applied=False, reconnect=False)
        finally:
            gateway.start_sensor_poller()

    async def _reopen(
        self,
        config: GatewayConfig,
        values: Mapping[str, JsonValue],
        changed: frozenset[str],
        *,
        may_fail: bool = True,
    ) -> DeviceBank:
        """Close the bank and open ``config``'s devices (in a thread: gpiozero may block);
        unchanged outputs keep their values."""
        gateway = self._gateway
        assert gateway.rewiring is not None
        bank = gateway.rewiring.make_bank(config)
        await asyncio.to_thread(gateway.bank.close)
        try:
            await asyncio.to_thread(bank.open, gateway.engine.on_input)
        except GatewayError:
            if may_fail:
                return await self._reopen(gateway.config, values, frozenset(), may_fail=False)
            raise
        for name, device in config.devices.items():
            if name in changed or not is_output(device) or name not in values:
                continue
            try:
                bank.write(name, codec_for(device).parse_desired(values[name]))
            except GatewayError as exc:
                log.warning("output_not_restored", device=name, error=str(exc))
        return bank
