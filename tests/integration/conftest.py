"""Fixtures shared by the integration tests: a unique thing, an in-process gateway on mock
GPIO against the session broker, and a fault proxy in front of that broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.devcloud import MosquittoBroker
from gateway.devcloud.faultproxy import FaultProxy
from tests.integration.harness import RunningGateway, running_gateway, write_config


@pytest.fixture
def thing() -> str:
    return f"pi-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_gateway(broker: MosquittoBroker, tmp_path: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(thing: str, **options: Any) -> AsyncIterator[RunningGateway]:
        path = write_config(tmp_path, broker, thing, **options)
        async with running_gateway(path, tmp_path / "mock") as running:
            yield running

    return start


@pytest.fixture
async def proxy(broker: MosquittoBroker) -> AsyncIterator[FaultProxy]:
    fault = FaultProxy(broker.host, broker.port)
    await fault.start()
    yield fault
    await fault.stop()


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once (pip wheel, as a release is built), from a copy
    of the tree: setuptools' build/ folder in a checkout may hold files deleted since."""
    import shutil
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("dist")
    tree = tmp_path_factory.mktemp("tree") / "edge-gateway"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "bench", "tests"
    )
    shutil.copytree(Path(__file__).resolve().parents[2], tree, symlinks=True, ignore=skip)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(tree)]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    (wheel,) = out.glob("edge_gateway-*.whl")
    return wheel
