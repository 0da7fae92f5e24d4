"""Soak: does the gateway's memory stay flat under a steady load and a flapping link?

10 deltas/s from the cloud side, a button press every second (an input with ``events: true``,
driven through the admin socket) and a cut link every minute (down for 2 s), for --minutes
(default 60), against a gateway process on mock GPIO behind a fault proxy. Samples the
gateway's RSS every 10 s (a progress line each minute on stderr), then checks that every
press reached the broker in order, and prints a summary; not part of CI (run by hand):

    .venv/bin/python -m bench.soak --minutes 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.devcloud import DevCA, MosquittoBroker, ShadowClient, ShadowService, ShadowTimeoutError
from gateway.devcloud.events import EventCollector, EventOrderError, collect_events
from gateway.devcloud.faultproxy import FaultProxy
from gateway.ops.admin import request

THING = "soak-pi"
DEVICES = """\
devices:
  led:    {type: LED, pin: 17}
  fan:    {type: PWMLED, pin: 18}
  button: {type: Button, pin: 4, events: true}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def event_summary(collector: EventCollector, pressed: list[bool]) -> dict[str, object]:
    try:
        unique = collector.unique_in_order()
    except EventOrderError as exc:
        return {"events_pressed": len(pressed), "events_order_error": str(exc)}
    return {
        "events_pressed": len(pressed),
        "events_delivered": len(unique),
        "events_redelivered": collector.redeliveries,
        "events_lost": len(pressed) - len(unique),
        "events_in_order_and_equal": [event["value"] for event in unique] == pressed,
    }


async def soak(
    minutes: float, rate_hz: float, cut_every_s: float, press_every_s: float
) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    ca = DevCA.load_or_create(work / "ca")
    with MosquittoBroker(work / "broker", ca) as broker:
        service = ShadowService(
            broker.host, broker.port, broker.credentials(broker.service_identity)
        )
        ready = asyncio.Event()
        service_task = asyncio.ensure_future(service.run(ready=ready))
        await asyncio.wait_for(ready.wait(), 10)
        proxy = FaultProxy(broker.host, broker.port)
        await proxy.start()
        creds = broker.credentials(THING)
        config = work / "gateway.yaml"
        config.write_text(
            f"thing: {THING}\nmqtt:\n  host: {broker.host}\n  port: {proxy.port}\n"
            f"  ca: {creds.ca}\n  cert: {creds.cert}\n  key: {creds.key}\n"
            "  reconnect: {min_s: 0.2, max_s: 2}\n"
            f"gpio: {{pin_factory: mock}}\nstate_dir: {work / 'state'}\n"
            f"admin_socket: {work / 'admin.sock'}\nlogging: {{format: json, level: warning}}\n"
            + DEVICES
        )
        gateway = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
        )
        samples: list[tuple[float, int]] = []
        pressed: list[bool] = []
        sent = accepted = timeouts = cuts = 0
        started = time.monotonic()
        deadline = started + minutes * 60
        next_cut = started + cut_every_s
        next_sample = started + 10
        next_press = started + press_every_s
        admin_socket = work / "admin.sock"
        admin = broker.credentials(broker.admin_identities[0])
        try:
            # Until the gateway listens (a loaded machine can take longer than a fixed pause).
            async with asyncio.timeout(60):
                while not admin_socket.exists():  # noqa: ASYNC110 (a file, no event)
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            async with (
                collect_events(broker.host, broker.port, admin, THING) as collector,
                ShadowClient(broker.host, broker.port, admin, timeout=2.0) as client,
            ):
                index = 0
                while (now := time.monotonic()) < deadline:
                    if now >= next_sample:
                        samples.append((now - started, rss_kib(gateway.pid)))
                        next_sample += 10
                        if len(samples) % 6 == 0:
                            progress = event_summary(collector, pressed)
                            print(
                                f"{(now - started) / 60:5.1f} min  rss {samples[-1][1]} KiB  "
                                f"deltas {accepted}/{sent}  cuts {cuts}  events "
                                f"{progress.get('events_delivered')}/{len(pressed)}",
                                file=sys.stderr,
                                flush=True,
                            )
                    if now >= next_press:
                        value = not pressed[-1] if pressed else True
                        await asyncio.to_thread(
                            request,
                            admin_socket,
                            {"cmd": "mock_set", "name": "button", "value": value},
                        )
                        pressed.append(value)  # accepted: the gateway answered
                        next_press += press_every_s
                    if now >= next_cut:
                        proxy.cut()
                        cuts += 1
                        await asyncio.sleep(2)
                        proxy.restore()
                        next_cut += cut_every_s
                    index += 1
                    sent += 1
                    try:
                        await client.update(THING, {"desired": {"fan": (index % 100) / 100}})
                        accepted += 1
                    except ShadowTimeoutError:
                        timeouts += 1
                    await asyncio.sleep(max(0.0, started + index / rate_hz - time.monotonic()))
                final = await client.get(THING)
                # Let the last batch out of the outbox, then judge what arrived.
                with contextlib.suppress(TimeoutError, EventOrderError):
                    await collector.wait_for(
                        lambda: len(collector.unique_in_order()) >= len(pressed), timeout=30
                    )
                events = event_summary(collector, pressed)
        finally:
            gateway.terminate()
            await gateway.wait()
            await proxy.stop()
            service_task.cancel()
            await asyncio.gather(service_task, return_exceptions=True)
    rss = [value for _, value in samples]
    half = len(rss) // 2 or 1
    return {
        "minutes": minutes,
        "deltas_sent": sent,
        "deltas_accepted_by_cloud": accepted,
        "cloud_timeouts": timeouts,
        "link_cuts": cuts,
        "proxy_connections": proxy.connections,
        "rss_kib_first": rss[0] if rss else None,
        "rss_kib_last": rss[-1] if rss else None,
        "rss_kib_max": max(rss) if rss else None,
        "rss_kib_median_first_half": statistics.median(rss[:half]) if rss else None,
        "rss_kib_median_second_half": statistics.median(rss[half:]) if rss else None,
        **events,
        "final_reported_fan": (final or {}).get("state", {}).get("reported", {}).get("fan"),
        "final_reported_button": (final or {}).get("state", {}).get("reported", {}).get("button"),
        "last_press": pressed[-1] if pressed else None,
        "final_desired": (final or {}).get("state", {}).get("desired"),
        "gateway_exit_code": gateway.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="deltas per second")
    parser.add_argument("--cut-every", type=float, default=60.0, help="seconds between link cuts")
    parser.add_argument(
        "--press-every", type=float, default=1.0, help="seconds between button presses"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the summary here (bench/results/soak.json is "
        "what the full benchmark's targets table reads)",
    )
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes, args.rate, args.cut_every, args.press_every))
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
