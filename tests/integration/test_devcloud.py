"""The dev cloud against a real mosquitto: TLS, ACLs and the shadow service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.devcloud import (
    BrokerError,
    DevCA,
    MosquittoBroker,
    ShadowClient,
    ShadowRejectedError,
    ShadowService,
    ShadowStore,
)
from gateway.devcloud.pki import client_ssl_context

pytestmark = pytest.mark.integration


def new_thing() -> str:
    return f"thing-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def thing_client(broker: MosquittoBroker, thing: str) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT connection authenticated by a certificate whose CN is ``thing``."""
    tls = await asyncio.to_thread(client_ssl_context, broker.credentials(thing))
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=thing,
        protocol=aiomqtt.ProtocolVersion.V311,
        tls_context=tls,
    ) as client:
        yield client


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(5):
        async for message in client.messages:
            return message
    raise AssertionError("message iterator ended")


@contextlib.asynccontextmanager
async def running(service: ShadowService) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready=ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})


async def test_update_is_accepted_and_delta_reaches_the_thing(
    broker: MosquittoBroker, shadow_service: ShadowService, shadow_client: ShadowClient
) -> None:
    thing = new_thing()
    async with thing_client(broker, thing) as device:
        await device.subscribe(f"$aws/things/{thing}/shadow/update/delta", qos=1)
        accepted = await shadow_client.update(thing, {"desired": {"on": True}})
        delta = json.loads(bytes((await next_message(device)).payload))
    assert accepted["state"] == {"desired": {"on": True}}
    assert accepted["version"] == 1
    assert delta["state"] == {"on": True}
    assert delta["version"] == 1


async def test_stale_version_is_rejected_with_409(
    shadow_service: ShadowService, shadow_client: ShadowClient
) -> None:
    thing = new_thing()
    await shadow_client.update(thing, {"reported": {"on": False}})
    await shadow_client.update(thing, {"reported": {"on": True}})
    with pytest.raises(ShadowRejectedError) as info:
        await shadow_client.update(thing, {"desired": {"on": False}}, version=1)
    assert (info.value.code, info.value.message) == (409, "Version conflict")


async def test_get_on_fresh_thing_returns_none(
    shadow_service: ShadowService, shadow_client: ShadowClient
) -> None:
    assert await shadow_client.get(new_thing()) is None


async def test_thing_cannot_update_another_things_shadow(
    broker: MosquittoBroker, shadow_service: ShadowService, shadow_client: ShadowClient
) -> None:
    intruder, victim = new_thing(), new_thing()
    body = json.dumps({"state": {"desired": {"on": True}}})
    async with thing_client(broker, intruder) as client:
        # mosquitto drops the forbidden publish silently; the allowed one, sent after it on the
        # same connection, proves the service has had its chance to see both.
        await client.publish(f"$aws/things/{victim}/shadow/update", body, qos=1)
        await client.publish(f"$aws/things/{intruder}/shadow/update", body, qos=1)
        await shadow_client.wait_for(intruder, lambda doc: doc["version"] >= 1, timeout=5)
    assert await shadow_client.get(victim) is None
    assert shadow_service.store.document(victim) is None


async def test_wait_for_sees_a_later_report(
    broker: MosquittoBroker, shadow_service: ShadowService, shadow_client: ShadowClient
) -> None:
    thing = new_thing()
    await shadow_client.update(thing, {"desired": {"level": 3}})

    async def device_reports() -> None:
        async with thing_client(broker, thing) as device:
            body = json.dumps({"state": {"reported": {"level": 3}}})
            await device.publish(f"$aws/things/{thing}/shadow/update", body, qos=1)

    reporter = asyncio.create_task(device_reports())
    doc = await shadow_client.wait_for(
        thing, lambda d: d["state"].get("reported", {}).get("level") == 3, timeout=5
    )
    await reporter
    assert "delta" not in doc["state"]
    assert doc["version"] == 2


async def test_state_file_keeps_shadows_across_service_restart(
    broker: MosquittoBroker, shadow_client: ShadowClient, tmp_path: Path
) -> None:
    thing = new_thing()
    state_file = tmp_path / "shadows.json"
    creds = broker.credentials(broker.service_identity)

    async with running(ShadowService(broker.host, broker.port, creds, state_file=state_file)):
        await shadow_client.update(thing, {"desired": {"on": True}, "reported": {"on": False}})
    assert state_file.exists()

    restarted = ShadowService(broker.host, broker.port, creds, state_file=state_file)
    async with running(restarted):
        doc = await shadow_client.get(thing)
    assert doc is not None
    assert doc["state"]["delta"] == {"on": True}
    assert doc["version"] == 1


async def test_service_reconnects_after_broker_restart(dev_ca: DevCA, tmp_path: Path) -> None:
    thing = new_thing()
    with MosquittoBroker(tmp_path / "broker", dev_ca) as own:
        service = ShadowService(
            own.host, own.port, own.credentials(own.service_identity), store=ShadowStore()
        )
        admin = own.credentials(own.admin_identities[0])
        async with running(service):
            own.restart()
            # The service is back once it answers; ShadowClient connects after the restart.
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(Exception):
                        async with ShadowClient(own.host, own.port, admin, timeout=0.5) as client:
                            accepted: dict[str, Any] = await client.update(
                                thing, {"reported": {"up": True}}
                            )
                            break
                    await asyncio.sleep(0.1)
    assert accepted["version"] == 1


def test_missing_mosquitto_is_a_clear_error(
    dev_ca: DevCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.devcloud.broker.shutil.which", lambda _name: None)
    monkeypatch.setattr("gateway.devcloud.broker._FALLBACK_BINARY", str(tmp_path / "none"))
    with pytest.raises(BrokerError, match="mosquitto not found"):
        MosquittoBroker(tmp_path, dev_ca).start()


def test_start_failure_reports_the_log_tail(
    broker: MosquittoBroker, dev_ca: DevCA, tmp_path: Path
) -> None:
    clash = MosquittoBroker(tmp_path, dev_ca, port=broker.port)  # port already taken
    with pytest.raises(BrokerError, match="mosquitto log tail") as info:
        clash.start()
    assert "Address already in use" in str(info.value)
    assert not clash.running
