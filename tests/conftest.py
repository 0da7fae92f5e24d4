"""Shared pytest fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.devcloud import DevCA, MosquittoBroker, ShadowClient, ShadowService, ShadowStore

# --- dev cloud: CA, mosquitto broker, shadow service ---------------------------------------------
# A missing mosquitto makes these fixtures fail (BrokerError), never skip.


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    """A throwaway CA shared by the whole session."""
    return DevCA.load_or_create(tmp_path_factory.mktemp("dev-ca"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, dev_ca: DevCA) -> Iterator[MosquittoBroker]:
    """A running mosquitto with mutual TLS and per-thing ACLs, stopped at session end."""
    with MosquittoBroker(tmp_path_factory.mktemp("broker"), dev_ca) as running:
        yield running


@pytest.fixture
async def shadow_service(broker: MosquittoBroker) -> AsyncIterator[ShadowService]:
    """A ShadowService with a fresh ShadowStore, subscribed and answering."""
    service = ShadowService(
        broker.host,
        broker.port,
        broker.credentials(broker.service_identity),
        store=ShadowStore(),
    )
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready=ready))
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait({task, ready_wait}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        ready_wait.cancel()
        if task.done():
            task.result()  # re-raises why the service stopped
        task.cancel()
        await asyncio.wait({task, ready_wait})
        pytest.fail(f"shadow service did not subscribe within 10 s (see {broker.log_path})")
    yield service
    task.cancel()
    await asyncio.wait({task})


@pytest.fixture
async def shadow_client(broker: MosquittoBroker) -> AsyncIterator[ShadowClient]:
    """A ShadowClient connected as the first admin identity (the cloud application)."""
    creds = broker.credentials(broker.admin_identities[0])
    async with ShadowClient(broker.host, broker.port, creds) as client:
        yield client


# --- end of dev cloud fixtures --------------------------------------------------------------------
