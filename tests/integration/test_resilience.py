"""Faults between the gateway and the broker: what must arrive, arrives.

A fault proxy sits between gateway and broker (see faultproxy.py); the assertions are made on
what the broker side receives: every event in order (a duplicate only as a redelivery with the
same id), and the right final shadow state.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.app import build_gateway
from gateway.config import load_config
from gateway.core.tls import client_context
from gateway.devcloud import MosquittoBroker, ShadowClient, ShadowService, ShadowTimeoutError
from gateway.devcloud.events import EventCollector, collect_events
from gateway.devcloud.faultproxy import FaultProxy
from gateway.devices.gpio import make_pin_factory
from gateway.ops.admin import request
from tests.integration.harness import (
    FAST_RECONNECT,
    RunningGateway,
    gateway_via,
    reported,
    until,
    write_config,
)

pytestmark = pytest.mark.integration

EVENT_DEVICES = """\
  led:    {type: LED, pin: 17}
  button: {type: Button, pin: 4, pull_up: true, events: true}
"""


def collect(broker: MosquittoBroker, thing: str) -> Any:
    """The cloud side's view of the thing's events and status topics, via the real broker."""
    creds = broker.credentials(broker.admin_identities[0])
    return collect_events(broker.host, broker.port, creds, thing)


@asynccontextmanager
async def watched_gateway(
    proxy: FaultProxy, broker: MosquittoBroker, directory: Path, thing: str, **options: Any
) -> AsyncIterator[tuple[EventCollector, RunningGateway]]:
    """A gateway with an event-keeping button behind ``proxy``, and the cloud side watching."""
    options.setdefault("devices", EVENT_DEVICES)
    async with (
        collect(broker, thing) as collector,
        gateway_via(proxy, broker, directory, thing, **options) as running,
    ):
        yield collector, running


async def test_desired_set_during_a_cut_link_is_applied_after_reconnect(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_via(proxy, broker, tmp_path, thing) as running:
        proxy.cut()
        await until(lambda: not running.gateway.shadow.connected)
        await shadow_client.update(thing, {"desired": {"led": True}})
        await asyncio.sleep(0.3)
        assert running.pin(17).state == 0  # nothing can arrive while the link is down
        proxy.restore()
        await shadow_client.wait_for(thing, reported("led", True), timeout=10)
        assert running.pin(17).state == 1
        assert running.gateway.reconnects >= 1


async def test_presses_during_an_outage_all_arrive_in_order_with_the_final_state(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    async with watched_gateway(proxy, broker, tmp_path, thing) as (collector, running):
        proxy.cut()
        await until(lambda: not running.gateway.shadow.connected)
        for _ in range(30):
            running.pin(4).drive_low()
            running.pin(4).drive_high()
        running.pin(4).drive_low()
        await asyncio.sleep(0.2)
        proxy.restore()
        await collector.wait_for(lambda: len(collector.unique_in_order()) >= 61)
        values = [event["value"] for event in collector.unique_in_order()]
        assert values == [True, False] * 30 + [True]
        await shadow_client.wait_for(thing, reported("button", True), timeout=10)
        assert "offline" in collector.statuses  # the Last Will spoke for the cut link
        assert collector.statuses[-1] == "online"


async def test_link_cut_while_a_delta_is_in_flight_loses_nothing(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    async with watched_gateway(proxy, broker, tmp_path, thing) as (collector, running):
        proxy.delay_s = 0.5  # both directions: what is sent now is still inside the link
        await shadow_client.update(thing, {"desired": {"led": True}})
        running.pin(4).drive_low()  # an event and a report on their way up
        await asyncio.sleep(0.2)
        proxy.cut()
        proxy.delay_s = 0.0
        await asyncio.sleep(0.5)
        assert running.pin(17).state == 0  # the delta died with the link
        assert collector.events == []  # and so did the event
        proxy.restore()
        # The delta is recovered by the get after reconnecting, the event from the outbox.
        await shadow_client.wait_for(thing, reported("led", True), timeout=10)
        assert running.pin(17).state == 1
        await collector.wait_for(lambda: len(collector.unique_in_order()) >= 1)
        assert [event["value"] for event in collector.unique_in_order()] == [True]
        await shadow_client.wait_for(thing, reported("button", True), timeout=10)


async def test_black_hole_longer_than_keepalive_is_detected_and_survived(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    async with watched_gateway(proxy, broker, tmp_path, thing, keepalive_s=5) as (
        collector,
        running,
    ):
        proxy.blackhole()
        for _ in range(5):  # swallowed by the dead link: only the outbox still has them
            running.pin(4).drive_low()
            running.pin(4).drive_high()
        # paho notices the missing PINGRESP after about 1.5 keepalives.
        await until(lambda: not running.gateway.shadow.connected, timeout=15)
        running.pin(4).drive_low()
        await shadow_client.update(thing, {"desired": {"led": True}})
        proxy.restore()
        await collector.wait_for(lambda: len(collector.unique_in_order()) >= 11, timeout=15)
        values = [event["value"] for event in collector.unique_in_order()]
        assert values == [True, False] * 5 + [True]
        await shadow_client.wait_for(thing, reported("button", True), timeout=15)
        await shadow_client.wait_for(thing, reported("led", True), timeout=10)
        assert running.pin(17).state == 1


async def test_slow_link_still_converges(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    async with gateway_via(proxy, broker, tmp_path, thing) as running:
        proxy.delay_s = 0.2
        await shadow_client.update(thing, {"desired": {"led": True}})
        await shadow_client.wait_for(thing, reported("led", True), timeout=10)
        assert running.pin(17).state == 1


async def test_broker_restart_is_ridden_through(
    tmp_path_factory: pytest.TempPathFactory, dev_ca: Any, tmp_path: Path, thing: str
) -> None:
    with MosquittoBroker(tmp_path_factory.mktemp("own-broker"), dev_ca) as own:
        service = ShadowService(own.host, own.port, own.credentials(own.service_identity))
        ready = asyncio.Event()
        service_task = asyncio.ensure_future(service.run(ready=ready))
        await asyncio.wait_for(ready.wait(), 10)
        proxy = FaultProxy(own.host, own.port)
        await proxy.start()
        try:
            creds = own.credentials(own.admin_identities[0])
            async with gateway_via(proxy, own, tmp_path, thing, devices=EVENT_DEVICES) as running:
                await asyncio.to_thread(own.stop)
                await until(lambda: not running.gateway.shadow.connected)
                for _ in range(10):
                    running.pin(4).drive_low()
                    running.pin(4).drive_high()
                running.pin(4).drive_low()
                # Hold the gateway back until the cloud side listens again (the test
                # broker keeps no sessions across a restart).
                proxy.cut()
                await asyncio.to_thread(own.start)
                async with collect(own, thing) as collector:
                    proxy.restore()
                    await collector.wait_for(
                        lambda: len(collector.unique_in_order()) >= 21, timeout=20
                    )
                    values = [event["value"] for event in collector.unique_in_order()]
                    assert values == [True, False] * 10 + [True]
                assert running.gateway.reconnects >= 1
                async with ShadowClient(own.host, own.port, creds, timeout=1.0) as client:
                    # The shadow service is reconnecting too; like a cloud app, retry until
                    # it answers.
                    async with asyncio.timeout(15):
                        while True:
                            try:
                                await client.update(thing, {"desired": {"led": True}})
                                break
                            except ShadowTimeoutError:
                                continue
                    await client.wait_for(thing, reported("led", True), timeout=15)
                    await client.wait_for(thing, reported("button", True), timeout=15)
                assert running.pin(17).state == 1
        finally:
            await proxy.stop()
            service_task.cancel()
            await asyncio.gather(service_task, return_exceptions=True)


async def test_full_outbox_disk_keeps_running_in_memory_and_recovers(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.core import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "RETRY_DISK_AFTER_S", 0.2)
    presses = 1500  # 3000 events: far more than a 64 KB outbox file holds
    with capture_logs() as logs:
        async with watched_gateway(
            proxy, broker, tmp_path, thing, extra="outbox: {max_bytes: 65536}\n"
        ) as (collector, running):
            proxy.cut()
            await until(lambda: not running.gateway.shadow.connected)
            for _ in range(presses):
                running.pin(4).drive_low()
                running.pin(4).drive_high()
            await until(lambda: any(e["event"] == "outbox_disk_failed" for e in logs))
            assert running.gateway.shadow.values["button"] is False  # still running
            proxy.restore()
            await collector.wait_for(
                lambda: len(collector.unique_in_order()) >= 2 * presses, timeout=60
            )
            values = [event["value"] for event in collector.unique_in_order()]
            assert values == [True, False] * presses
            # Delivery freed the disk: the writer moves back onto it by itself, no change needed.
            await until(lambda: any(e["event"] == "outbox_disk_recovered" for e in logs))
            assert not running.gateway.outbox.degraded


class GatewayProcesses:
    """``edge-gateway run`` processes (mock GPIO) for one config, one after another; whatever is
    still running when the block ends is killed."""

    def __init__(self, config: Path, directory: Path) -> None:
        self.socket = directory / "admin.sock"
        self._command = [sys.executable, "-m", "gateway", "run", "-c", str(config), "--mock-gpio"]
        self._log = directory / "gateway.log"
        self._processes: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> GatewayProcesses:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def start(self) -> asyncio.subprocess.Process:
        """Start one and wait until its admin socket answers to the name."""
        self.socket.unlink(missing_ok=True)  # left behind by a killed process
        with self._log.open("a") as log:  # the child keeps its own descriptor
            process = await asyncio.create_subprocess_exec(*self._command, stdout=log, stderr=log)
        self._processes.append(process)
        await until(self.socket.exists, timeout=15)
        return process

    def admin(self, payload: dict[str, Any]) -> dict[str, Any]:
        return request(self.socket, payload)

    @staticmethod
    async def kill_9(process: asyncio.subprocess.Process) -> None:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    @staticmethod
    async def stop(process: asyncio.subprocess.Process) -> int:
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), 10)


async def test_kill_9_with_a_non_empty_outbox_loses_no_event(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    shadow_client: ShadowClient,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    devices = EVENT_DEVICES + "  relay:  {type: OutputDevice, pin: 27, restore: true}\n"
    config = write_config(
        tmp_path, broker, thing, port=proxy.port, mqtt_extra=FAST_RECONNECT, devices=devices
    )
    await shadow_client.update(thing, {"reported": {"relay": True}})  # to be restored

    async with (
        collect(broker, thing) as collector,
        GatewayProcesses(config, tmp_path) as gateways,
    ):

        async def mock_set(value: str) -> None:  # through the CLI, as a user would
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "mock",
                "set",
                "button",
                value,
                "--socket",
                str(gateways.socket),
                stdout=asyncio.subprocess.DEVNULL,
            )
            assert await process.wait() == 0

        first = await gateways.start()
        await shadow_client.wait_for(
            thing, lambda doc: "button" in doc["state"].get("reported", {}), timeout=10
        )
        proxy.cut()
        await asyncio.sleep(0.3)
        for _ in range(5):
            await mock_set("true")
            await mock_set("false")
        await asyncio.sleep(0.2)  # accepted: persisted by the writer
        await gateways.kill_9(first)
        assert collector.unique_in_order() == []  # nothing got out before the kill
        proxy.restore()
        second = await gateways.start()
        await collector.wait_for(lambda: len(collector.unique_in_order()) >= 10)
        values = [event["value"] for event in collector.unique_in_order()]
        assert values == [True, False] * 5
        await shadow_client.wait_for(thing, reported("button", False), timeout=10)
        status = await asyncio.to_thread(gateways.admin, {"cmd": "status"})
        assert status["devices"]["relay"] is True  # restored on the fresh pins
        doc = await shadow_client.get(thing)
        assert doc is not None and doc["state"]["reported"]["relay"] is True
        assert await gateways.stop(second) == 0


async def test_kill_9_in_the_middle_of_delivery_loses_nothing(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    proxy: FaultProxy,
    tmp_path: Path,
    thing: str,
) -> None:
    """Killed again and again while its outbox drains: every event still arrives, in order,
    and a redelivery (sent, but its PUBACK or delete lost with the process) keeps its id."""
    presses = 500  # 1000 events, ten batches on the wire
    config = write_config(
        tmp_path, broker, thing, port=proxy.port, mqtt_extra=FAST_RECONNECT, devices=EVENT_DEVICES
    )

    async with (
        collect(broker, thing) as collector,
        GatewayProcesses(config, tmp_path) as gateways,
    ):

        def progressed(before: int) -> Callable[[], bool]:
            def check() -> bool:
                now = len(collector.unique_in_order())
                return now > before or now == 2 * presses

            return check

        proxy.cut()
        first = await gateways.start()
        for _ in range(presses):
            for value in (True, False):
                await asyncio.to_thread(
                    gateways.admin, {"cmd": "mock_set", "name": "button", "value": value}
                )
        await until(lambda: gateways.admin({"cmd": "status"})["outbox"]["events"] == 2 * presses)
        await gateways.kill_9(first)
        proxy.restore()
        for _ in range(3):
            process = await gateways.start()
            # Kill as soon as delivery has begun (or if it is already complete).
            await collector.wait_for(progressed(len(collector.unique_in_order())), timeout=20)
            await gateways.kill_9(process)
        last = await gateways.start()
        await collector.wait_for(
            lambda: len(collector.unique_in_order()) >= 2 * presses, timeout=30
        )
        values = [event["value"] for event in collector.unique_in_order()]
        assert values == [True, False] * presses
        assert await gateways.stop(last) == 0


async def test_a_refused_certificate_is_logged_as_such_not_as_a_network_error(
    broker: MosquittoBroker, tmp_path: Path, thing: str
) -> None:
    from gateway.devcloud import DevCA

    stranger = DevCA.load_or_create(tmp_path / "other-ca").issue(thing, tmp_path / "stranger")
    # The refusal surfaces when the connect attempt times out: keep that short here.
    path = write_config(
        tmp_path, broker, thing, mqtt_extra=FAST_RECONNECT + "  connect_timeout_s: 3\n"
    )
    text = path.read_text()
    text = text.replace(str(broker.credentials(thing).cert), str(stranger.cert))
    text = text.replace(str(broker.credentials(thing).key), str(stranger.key))
    path.write_text(text)
    config = load_config(path)
    factory = make_pin_factory("mock")
    gateway = build_gateway(config, pin_factory=factory)
    with capture_logs() as logs:
        task = asyncio.ensure_future(gateway.run())
        await until(lambda: any(e["event"] == "mqtt_certificate_rejected" for e in logs))
        gateway.stop()
        await asyncio.wait_for(task, 10)
    factory.close()
    # Under heavy load mosquitto may reset the socket before its TLS alert is read (our
    # CONNECT still unread in its buffer); then that one attempt looks like a network error.
    # The alert, whenever it arrives, is classified as a refused certificate.
    rejected = [e for e in logs if e["event"] == "mqtt_certificate_rejected"]
    assert "refused our TLS certificate" in rejected[0]["error"]
    assert gateway.backoff.attempt == 32  # at the cap: retrying sooner cannot help


def test_tls_context_trusts_only_the_configured_ca(dev_ca: Any, tmp_path: Path) -> None:
    import ssl

    creds = dev_ca.issue("pi-ca-check", tmp_path / "pi")
    context = client_context(creds.ca, creds.cert, creds.key)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # no system CA store
