"""Attack (issue 19): a corrupt outbox file.

Was: a truncated file or a random header made ``run`` exit 1 at every start (a restart loop
under systemd); random bytes mid-file started the gateway in memory mode with the pending events
out of view, and the first button press raised ``sqlite3.DatabaseError``; a file truncated to
zero lost its pending events without a word.

Now: a real outbox file with pending events is damaged in each of these ways, then a gateway on
mock GPIO starts on it against the real broker and the button is pressed. The gateway runs, the
press reaches the cloud side, every event that could be salvaged from the damaged file reaches
it too (in order, ids never reused), and the damaged file is kept aside as found.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.core.outbox import Change, Outbox
from gateway.devcloud import MosquittoBroker, ShadowService
from gateway.devcloud.events import collect_events
from tests.integration.harness import until, write_config

pytestmark = pytest.mark.integration

EVENT_DEVICES = """\
  led:    {type: LED, pin: 17}
  button: {type: Button, pin: 4, pull_up: true, events: true}
"""
PENDING = 400  # three leaf pages of events in the file


def with_pending_events(path: Path) -> None:
    """An outbox left by an earlier run: 400 presses never delivered (the link was down)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(path)
    outbox.open()
    outbox.record([Change("button", n % 2 == 0, float(n), event=True) for n in range(PENDING)])
    outbox.close()  # checkpoints the WAL into the file: the damage below hits the rows


def event_pages(data: bytes) -> list[int]:
    """Pages holding event rows: after the reported table's page and the events' root."""
    pages = [n for n in range(1, len(data) // 4096) if b"button" in data[n * 4096 : (n + 1) * 4096]]
    return pages[2:]


def truncated(data: bytes) -> bytes:
    """Cut inside the last page of event rows, as a copy or a power cut can leave it."""
    return data[: event_pages(data)[-1] * 4096 + 1000]


def random_header(data: bytes) -> bytes:
    return random.Random(1).randbytes(100) + data[100:]


def random_bytes_mid_file(data: bytes) -> bytes:
    """Random bytes over the first page of event rows, as a failing SD card leaves them."""
    start = event_pages(data)[0] * 4096
    return data[:start] + random.Random(2).randbytes(4096) + data[start + 4096 :]


def emptied(data: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    ("damage", "salvageable"),
    [
        (truncated, True),
        (random_header, False),
        (random_bytes_mid_file, True),
        (emptied, False),
    ],
    ids=["truncated", "random_header", "random_bytes_mid_file", "truncated_to_zero"],
)
async def test_corrupt_outbox_is_moved_aside_salvaged_and_the_gateway_delivers_a_press(
    broker: MosquittoBroker,
    shadow_service: ShadowService,
    start_gateway: Callable[..., Any],
    tmp_path: Path,
    thing: str,
    damage: Callable[[bytes], bytes],
    salvageable: bool,
) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    with_pending_events(path)
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)

    creds = broker.credentials(broker.admin_identities[0])
    with capture_logs() as logs:
        async with (
            collect_events(broker.host, broker.port, creds, thing) as collector,
            start_gateway(thing, devices=EVENT_DEVICES) as running,
        ):
            kinds = {"outbox_corrupt_moved_aside", "outbox_empty_file_replaced"}
            [replaced] = [entry for entry in logs if entry["event"] in kinds]
            salvaged = replaced.get("events_salvaged", 0)
            assert (salvaged > 0) == salvageable
            running.pin(4).drive_low()  # the press after the damage
            await collector.wait_for(lambda: len(collector.unique_in_order()) >= salvaged + 1)
            await asyncio.sleep(0.2)  # nothing else is on its way
            events = collector.unique_in_order()  # raises on an id reused or out of order
            assert len(events) == salvaged + 1
            assert events[-1]["value"] is True and events[-1]["id"] > PENDING
            # Salvaged events are the file's own: value alternates with the original order.
            assert all(event["value"] == (event["id"] % 2 == 1) for event in events[:-1])
            status = running.gateway.status()
            assert status["outbox_in_memory"] is False
            assert status["healthy"] is True  # every supervised task still runs

    [aside] = sorted(path.parent.glob("outbox.sqlite3.corrupt-*[!lm]"))  # not -wal / -shm
    assert aside.read_bytes() == damaged  # kept as found, for inspection
    if damage is emptied:
        assert replaced["event"] == "outbox_empty_file_replaced"
        assert replaced["last_known_depth"]["events"] == PENDING  # said, not silently lost
    else:
        assert replaced["moved_to"] == str(aside)


async def test_run_starts_on_an_outbox_with_a_random_header_instead_of_exiting_1(
    broker: MosquittoBroker, shadow_service: ShadowService, tmp_path: Path, thing: str
) -> None:
    """The restart loop itself: ``edge-gateway run`` (as systemd starts it) on the damaged
    file stays up, answers ``status`` from a fresh outbox, and stops cleanly."""
    from tests.integration.test_resilience import GatewayProcesses

    path = tmp_path / "state" / "outbox.sqlite3"
    with_pending_events(path)
    path.write_bytes(random_header(path.read_bytes()))
    config = write_config(tmp_path, broker, thing, devices=EVENT_DEVICES)
    async with GatewayProcesses(config, tmp_path) as gateways:
        process = await gateways.start()
        await until(lambda: gateways.admin({"cmd": "status"})["connected"] is True)
        status = gateways.admin({"cmd": "status"})
        assert status["outbox_in_memory"] is False and process.returncode is None
        assert await gateways.stop(process) == 0
    assert len(list(path.parent.glob("outbox.sqlite3.corrupt-*"))) >= 1
    assert "outbox_corrupt_moved_aside" in (tmp_path / "gateway.log").read_text()
