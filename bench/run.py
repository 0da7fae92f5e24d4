"""Every figure in BENCHMARKS.md from one command: ``python -m bench`` (``--smoke`` for CI).

Starts mosquitto (mutual TLS, loopback) and the dev cloud shadow service (its own process),
then measures three devices side by side on that broker, each in its own process:

- ``floor``: a minimal paho echo device (bench/floor.py), what nothing can beat;
- ``gateway``: ``python -m gateway run --mock-gpio`` with the example config's devices;
- ``peer``: the same echo written with the AWS IoT Device SDK v2 (bench/peer.py).

Latency rounds are interleaved (floor, gateway, peer, floor, ...) and each thing's rounds start
at least 60 ms apart: the gateway keeps to AWS's 20 shadow requests/s per thing, and the floor
and peer are paced the same way. Results go to ``--out`` (results.json, results.md, PNGs) and,
for a full run, into the marked block of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from bench.cloud import _NODELAY, CloudApp
from bench.footprint import IdleSample, ImportReport, cli_figures, cli_rows, gateway_command
from bench.measure import Distribution, rss_mb
from gateway.devcloud import DevCA, MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("floor", "gateway", "peer")
ROUND_SPACING_S = 0.06  # per thing: under AWS's 20 requests/s, which the gateway keeps to
INPUT_SPACING_S = 0.1  # input edges: past the gateway's 50 ms report coalescing window
SETTLE_S = 1.0  # after "synced", before reading RSS
# The devices of config/gateway.example.yaml (the headline rows use exactly these).
EXAMPLE_DEVICES = """\
  led:    {type: LED, pin: 17}
  relay:  {type: OutputDevice, pin: 27, active_high: false, initial: false}
  fan:    {type: PWMLED, pin: 18, frequency_hz: 100}
  servo:  {type: Servo, pin: 12}
  button: {type: Button, pin: 4, pull_up: true, bounce_ms: 20}
  motion: {type: MotionSensor, pin: 23}
  cpu:    {type: CPUTemperature, interval_s: 30, digits: 1}
"""
LIFTED_RATE = 1000.0  # requests/s for the bench-only "limit lifted" gateway rows
LIFTED_SHADOW_BYTES = 64 * 1024


@dataclass(frozen=True)
class Plan:
    smoke: bool
    rounds: int
    warmup: int
    input_rounds: int
    idle_s: float
    startup_trials: int
    many_deltas: int
    ladder: tuple[int, ...]
    step_s: float
    scaling: tuple[int, ...]
    scaling_rounds: int
    outbox_events: int
    settle_s: float
    cli_trials: int

    @classmethod
    def full(cls) -> Plan:
        return cls(False, 300, 30, 300, 60.0, 5, 10_000, (10, 20, 50, 100, 200, 400), 4.0,
                   (1, 50, 500), 100, 100_000, SETTLE_S, 5)  # fmt: skip

    @classmethod
    def quick(cls) -> Plan:
        return cls(True, 20, 3, 10, 0.0, 1, 200, (20,), 1.0, (1, 50), 5, 2000, 0.3, 1)


@dataclass
class Device:
    impl: str
    thing: str
    process: subprocess.Popen[bytes]
    log: Path
    err: Path | None = None  # stderr apart from the log (``-X importtime`` output)

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    broker: MosquittoBroker
    cloud: CloudApp
    devices: list[Device] = field(default_factory=list)
    provision_url: str | None = None  # the HTTPS Provision API (check-in, provisioning)
    rounds_sent: int = 0  # levels continue across phases, so a stale report never matches

    # -- processes ------------------------------------------------------------------------------

    def _creds_dir(self, thing: str) -> Path:
        return self.broker.credentials(thing).cert.parent

    def gateway_yaml(self, thing: str, devices: str, extra: str = "") -> Path:
        creds = self.broker.credentials(thing)
        directory = self.workdir / thing
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "gateway.yaml"
        path.write_text(
            extra + f"thing: {thing}\n"
            "shadow: {name: null, clear_desired: true}\n"
            f"mqtt: {{host: {self.broker.host}, port: {self.broker.port}, ca: {creds.ca}, "
            f"cert: {creds.cert}, key: {creds.key}, keepalive_s: 60}}\n"
            "gpio: {pin_factory: mock}\n"
            f"state_dir: {directory / 'state'}\n"
            f"admin_socket: {directory / 'admin.sock'}\n"
            "logging: {format: json, level: info}\n"
            f"devices:\n{devices}"
        )
        return path

    def full_config(self, thing: str) -> str:
        """Metrics, check-in, OTA (wheel mode, signatures required) and provisioning with
        renewal, all configured: what a fleet gateway runs with (the ``--full`` rows)."""
        from gateway.updates.signing import generate_keypair

        directory = self.workdir / thing
        directory.mkdir(parents=True, exist_ok=True)
        public = directory / "ota.pub.pem"
        if not public.exists():
            generate_keypair(directory / "ota.pem", public)
        ca = self.broker.credentials(thing).ca
        url = self.provision_url
        return (
            "metrics: {listen: '127.0.0.1:%d'}\n"
            f"checkin: {{url: '{url}provision/checkin', product_id: bench, ca: {ca}, "
            "client_cert: true, interval_s: 3600}\n"
            f"ota: {{mode: wheel, root: {directory / 'ota-root'}, public_key: {public}}}\n"
            f"provision: {{getcerts: {{url: '{url}', claim_id: bench-claim, ca: {ca}}}}}\n"
            "certs: {renew_before_days: 30}\n"
        ) % _free_port()

    def command(
        self,
        impl: str,
        thing: str,
        devices: str,
        launcher: list[str],
        *,
        python_args: list[str] | None = None,
        extra: str = "",
    ) -> list[str]:
        common = ["--port", str(self.broker.port), "--thing", thing]
        common += ["--creds", str(self._creds_dir(thing))]
        if impl == "floor":
            return [sys.executable, "-m", "bench.floor", "--host", self.broker.host, *common]
        if impl == "peer":
            # The CRT's TLS checks the name against the broker certificate's SAN.
            return [sys.executable, "-m", "bench.peer", "--host", "localhost", *common]
        config = str(self.gateway_yaml(thing, devices, extra))
        run = ["run", "-c", config, "--mock-gpio"]
        python = [sys.executable, *(python_args or [])]
        if launcher:
            return [*python, "-m", "bench.gateway_proc", *launcher, "--", *run]
        return [*python, "-m", "gateway", *run]

    def spawn(
        self,
        impl: str,
        thing: str,
        devices: str = EXAMPLE_DEVICES,
        launcher: list[str] | None = None,
        *,
        python_args: list[str] | None = None,
        extra: str = "",
    ) -> Device:
        log = self.workdir / f"{thing}.log"
        err = self.workdir / f"{thing}.stderr" if python_args else None
        command = self.command(
            impl, thing, devices, launcher or [], python_args=python_args, extra=extra
        )
        with log.open("wb") as out, (err or log).open("ab") as errors:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=errors if err else subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        device = Device(impl, thing, process, log, err)
        self.devices.append(device)
        return device

    async def start_synced(
        self,
        impl: str,
        thing: str,
        devices: str = EXAMPLE_DEVICES,
        launcher: list[str] | None = None,
        *,
        python_args: list[str] | None = None,
        extra: str = "",
    ) -> tuple[Device, float]:
        """Start a device; return it and the seconds until the cloud saw its first report."""
        synced = self.cloud.expect_any_report(thing)
        started = time.perf_counter()
        device = self.spawn(impl, thing, devices, launcher, python_args=python_args, extra=extra)
        deadline = started + 30
        while not synced.done():
            if device.process.poll() is not None or time.perf_counter() > deadline:
                synced.cancel()
                tail = device.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{impl} {thing} did not sync:\n{tail}")
            await asyncio.wait([synced], timeout=0.05)
        return device, synced.result() - started

    async def stop(self, device: Device) -> None:
        if device.process.poll() is None:
            device.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(device.process.wait, 10)
            except subprocess.TimeoutExpired:
                device.process.kill()
                await asyncio.to_thread(device.process.wait)
        with contextlib.suppress(ValueError):
            self.devices.remove(device)

    # -- measurements ---------------------------------------------------------------------------

    async def round_trip(self, thing: str, level: float) -> float:
        arrived = self.cloud.expect(thing, "fan", level)
        started = time.perf_counter()
        await self.cloud.set_desired(thing, {"fan": level})
        return await asyncio.wait_for(arrived, 10) - started

    async def latency(self, things: dict[str, str], rounds: int, warmup: int) -> dict[str, list]:
        """desired set -> reported accepted, interleaved over ``things`` (impl -> thing)."""
        samples: dict[str, list[float]] = {impl: [] for impl in things}
        last: dict[str, float] = dict.fromkeys(things, -math.inf)
        for index in range(warmup + rounds):
            level = _level(index)
            for impl, thing in things.items():
                await _sleep_until(last[impl] + ROUND_SPACING_S)
                last[impl] = time.perf_counter()
                elapsed = await self.round_trip(thing, level)
                if index >= warmup:
                    samples[impl].append(elapsed)
                await asyncio.sleep(0.005)
        return samples

    async def idle(self, devices: list[Device], seconds: float) -> dict[str, dict[str, Any]]:
        """CPU % and wake-ups/s (per thread too) of each device, connected and idle."""
        before = {d.impl: IdleSample.take(d.pid) for d in devices}
        await asyncio.sleep(seconds)
        return {d.impl: before[d.impl].until(IdleSample.take(d.pid)) for d in devices}

    async def footprint(self, tag: str, trials: int) -> dict[str, Any]:
        """Import time of ``run`` (and what it imported), the CLI rows against a running
        gateway, and the RSS of a gateway with everything configured."""
        results: dict[str, Any] = {}
        # One gateway serves both: its -X importtime report, and the CLI rows against it.
        thing = f"bench-cli-{tag}"
        device, _ = await self.start_synced("gateway", thing, python_args=["-X", "importtime"])
        await asyncio.sleep(self.plan.settle_s)
        config = self.workdir / thing / "gateway.yaml"
        socket = self.workdir / thing / "admin.sock"
        results["cli"] = await asyncio.to_thread(cli_rows, config, socket, ROOT, trials)
        await self.stop(device)
        assert device.err is not None
        results["import_time"] = ImportReport.parse(device.err.read_text()).as_dict()
        if self.provision_url is not None:
            rss, times = [], []
            for trial in range(self.plan.startup_trials):
                thing = f"bench-full-{tag}{trial}"
                extra = self.full_config(thing)
                device, elapsed = await self.start_synced("gateway", thing, extra=extra)
                await asyncio.sleep(max(self.plan.settle_s, 1.0))  # the first check-in
                rss.append(rss_mb(device.pid))
                times.append(elapsed)
                await self.stop(device)
            results["full_config"] = {
                "rss_start_mb": round(statistics.median(rss), 1),
                "startup_s": round(statistics.median(times), 3),
            }
            # ota guard with OTA in wheel mode configured (what the unit runs before a start).
            guard = [
                *gateway_command(),
                "ota",
                "guard",
                "-c",
                str(self.workdir / thing / "gateway.yaml"),
            ]
            results["cli"]["ota guard (wheel mode)"] = await asyncio.to_thread(
                cli_figures, guard, ROOT, trials
            )
        return results

    def _levels(self, count: int) -> list[float]:
        first, self.rounds_sent = self.rounds_sent, self.rounds_sent + count
        return [_level(i) for i in range(first, first + count)]

    def _follow(
        self, thing: str, levels: list[float]
    ) -> tuple[dict[int, float], Callable[[], None]]:
        """Arrival time per round index: a round counts as done when its level, or the level of
        any later round, is reported (the gateway may skip a value the cloud already replaced).
        Levels repeat every 997 rounds, so only the 996 rounds after the newest done one match."""
        index_of: dict[float, list[int]] = {}
        for index, level in enumerate(levels):
            index_of.setdefault(level, []).append(index)
        done: dict[int, float] = {}
        newest = [-1]

        def on_report(reported: dict[str, Any], received: float) -> None:
            candidates = [
                i for i in index_of.get(reported.get("fan"), []) if newest[0] < i <= newest[0] + 996
            ]
            if not candidates:
                return
            upto = candidates[0]
            for i in range(newest[0] + 1, upto + 1):
                done[i] = received
            newest[0] = upto

        return done, self.cloud.listen(thing, on_report)

    async def throughput(self, thing: str, rates: tuple[int, ...], step_s: float) -> list[dict]:
        """Open loop: desired updates at ``rate``/s; does every one come back without a
        growing lag? Stops after the first rate that is not sustained."""
        steps = []
        for rate in rates:
            count = max(1, int(rate * step_s))
            levels = self._levels(count)
            sent: list[float] = []
            done, remove = self._follow(thing, levels)
            start = time.perf_counter()
            for i, level in enumerate(levels):
                await _sleep_until(start + i / rate)
                sent.append(time.perf_counter())
                await self.cloud.set_desired(thing, {"fan": level})
            sending_s = time.perf_counter() - start
            drain_deadline = time.perf_counter() + 20
            while len(done) < count and time.perf_counter() < drain_deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            remove()
            lags = [done[i] - sent[i] for i in range(count) if i in done]
            quarter = max(1, len(lags) // 4)
            first, last = lags[:quarter], lags[-quarter:]
            growing = bool(lags) and statistics.median(last) > statistics.median(first) + 0.1
            lost = count - len(lags)
            end = max(done.values()) if done else start
            steps.append(
                {
                    "offered_per_s": rate,
                    "sent": count,
                    "sent_per_s": round(count / sending_s, 1) if sending_s else None,
                    "reported": len(lags),
                    "lost": lost,
                    "achieved_per_s": round(len(lags) / (end - start), 1) if lags else 0.0,
                    "lag_p50_ms": round(statistics.median(lags) * 1000, 1) if lags else None,
                    "lag_max_ms": round(max(lags) * 1000, 1) if lags else None,
                    "sustained": lost == 0 and not growing,
                }
            )
            await asyncio.sleep(0.3)
            if not steps[-1]["sustained"]:
                break
        return steps

    async def many_deltas(self, thing: str, count: int, window: int = 8) -> dict[str, Any]:
        """Closed loop, at most ``window`` deltas not yet followed by a report."""
        levels = self._levels(count)
        done, remove = self._follow(thing, levels)
        started = time.perf_counter()
        deadline = started + 600
        for index, level in enumerate(levels):
            while index - len(done) >= window and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)
            await self.cloud.set_desired(thing, {"fan": level})
        while len(done) < count and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        remove()
        elapsed = time.perf_counter() - started
        return {"deltas": count, "lost": count - len(done), "per_s": round(len(done) / elapsed, 1)}

    async def input_latency(self, rounds: int, warmup: int) -> dict[str, list[float]]:
        """Mock input edge -> reported seen by the cloud, for an in-process gateway, next to a
        floor that publishes the same reported update straight from its own client."""
        from gateway.app import build_gateway
        from gateway.config import load_config
        from gateway.devices.gpio import make_pin_factory

        thing = "bench-input-gateway"
        config = load_config(self.gateway_yaml(thing, EXAMPLE_DEVICES))
        factory = make_pin_factory("mock")
        gateway = build_gateway(config, pin_factory=factory, mock_dir=self.workdir / thing / "mock")
        task = asyncio.create_task(gateway.run())
        samples: dict[str, list[float]] = {"floor": [], "gateway": []}
        try:
            await asyncio.wait_for(gateway.shadow.synced.wait(), 20)
            button = factory.pin(4)  # pull-up: pressed drives the pin low

            def press(value: bool) -> None:
                button.drive_low() if value else button.drive_high()

            samples["gateway"] = await self._edges(thing, "button", press, rounds, warmup)
            floor_thing = "bench-input-floor"
            creds = self.broker.credentials(floor_thing)
            from gateway.devcloud.pki import client_ssl_context

            async with aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=floor_thing,
                protocol=aiomqtt.ProtocolVersion.V311,
                tls_context=client_ssl_context(creds),
                socket_options=_NODELAY,
            ) as client:
                topic = f"$aws/things/{floor_thing}/shadow/update"

                def report(value: bool) -> None:
                    body = f'{{"state":{{"reported":{{"button":{str(value).lower()}}}}}}}'
                    asyncio.get_running_loop().create_task(client.publish(topic, body, qos=1))

                samples["floor"] = await self._edges(floor_thing, "button", report, rounds, warmup)
        finally:
            gateway.stop()
            await asyncio.wait_for(task, 10)
            factory.close()
        return samples

    async def _edges(
        self, thing: str, key: str, act: Callable[[bool], None], rounds: int, warmup: int
    ) -> list[float]:
        samples = []
        for index in range(warmup + rounds):
            value = index % 2 == 0
            arrived = self.cloud.expect(thing, key, value)
            started = time.perf_counter()
            act(value)
            elapsed = await asyncio.wait_for(arrived, 10) - started
            if index >= warmup:
                samples.append(elapsed)
            await _sleep_until(started + INPUT_SPACING_S)
        return samples

    # -- the whole run --------------------------------------------------------------------------

    async def run(self, progress: Callable[[str], None]) -> dict[str, Any]:
        plan = self.plan
        results: dict[str, Any] = {}
        tag = uuid.uuid4().hex[:4]

        progress("start-up time and RSS after start (fresh thing each trial)")
        startup: dict[str, dict[str, Any]] = {}
        for impl in IMPLS:
            times, rss = [], []
            for trial in range(plan.startup_trials):
                device, elapsed = await self.start_synced(impl, f"bench-start-{impl}-{tag}{trial}")
                await asyncio.sleep(self.plan.settle_s)
                times.append(elapsed)
                rss.append(rss_mb(device.pid))
                await self.stop(device)
            startup[impl] = {
                "startup_s": round(statistics.median(times), 3),
                "startup_s_all": [round(t, 3) for t in times],
                "rss_start_mb": round(statistics.median(rss), 1),
            }
        results["startup"] = startup

        progress("desired -> reported latency, floor / gateway / peer interleaved")
        things = {impl: f"bench-{impl}-{tag}" for impl in IMPLS}
        running = {
            impl: (await self.start_synced(impl, thing))[0] for impl, thing in things.items()
        }
        await asyncio.sleep(self.plan.settle_s)
        samples = await self.latency(things, plan.rounds, plan.warmup)
        results["latency"] = {
            impl: Distribution.of_seconds(s).as_dict() for impl, s in samples.items()
        }
        results["latency_samples_ms"] = {
            impl: [round(x * 1000, 3) for x in s] for impl, s in samples.items()
        }
        if plan.idle_s:
            progress(f"idle CPU and wake-ups over {plan.idle_s:.0f} s, all three connected")
            idle = await self.idle(list(running.values()), plan.idle_s)
            results["idle"] = idle
            results["idle_cpu_pct"] = {impl: figures["cpu_pct"] for impl, figures in idle.items()}
        progress("sustained deltas/s (open loop, rate ladder)")
        results["throughput"] = {
            impl: await self.throughput(things[impl], plan.ladder, plan.step_s) for impl in IMPLS
        }
        for device in running.values():
            await self.stop(device)

        progress(f"RSS after {plan.many_deltas} deltas (closed loop, 8 in flight)")
        lifted = ["--max-requests-per-s", str(LIFTED_RATE)]
        many: dict[str, Any] = {}
        for impl in IMPLS:
            thing = f"bench-many-{impl}-{tag}"
            launcher = lifted if impl == "gateway" else None
            device, _ = await self.start_synced(impl, thing, launcher=launcher)
            await asyncio.sleep(self.plan.settle_s)
            before = rss_mb(device.pid)
            figures = await self.many_deltas(thing, plan.many_deltas)
            await asyncio.sleep(self.plan.settle_s)
            many[impl] = {**figures, "rss_before_mb": round(before, 1),
                          "rss_after_mb": round(rss_mb(device.pid), 1)}  # fmt: skip
            if impl == "gateway":
                progress("sustained deltas/s, gateway with the 20/s limit lifted")
                results["throughput"]["gateway_lifted"] = await self.throughput(
                    thing, plan.ladder, plan.step_s
                )
            await self.stop(device)
        results["many_deltas"] = many

        progress("input edge -> reported (in-process gateway, mock pin)")
        edges = await self.input_latency(plan.input_rounds, plan.warmup)
        results["input_latency"] = {
            k: Distribution.of_seconds(v).as_dict() for k, v in edges.items()
        }

        progress(f"scaling: {', '.join(map(str, plan.scaling))} devices on one gateway")
        scaling = []
        for count in plan.scaling:
            thing = f"bench-scale{count}-{tag}"
            launcher = ["--shadow-limit-bytes", str(LIFTED_SHADOW_BYTES)] if count > 50 else None
            device, elapsed = await self.start_synced(
                "gateway", thing, devices=scaled_devices(count), launcher=launcher
            )
            await asyncio.sleep(self.plan.settle_s)
            rss_start = rss_mb(device.pid)
            trips = (await self.latency({"gateway": thing}, plan.scaling_rounds, plan.warmup))[
                "gateway"
            ]
            dist = Distribution.of_seconds(trips)
            scaling.append(
                {
                    "devices": count,
                    "startup_s": round(elapsed, 3),
                    "rss_start_mb": round(rss_start, 1),
                    "rss_after_mb": round(rss_mb(device.pid), 1),
                    "p50_ms": round(dist.p50, 2),
                    "p99_ms": round(dist.p99, 2),
                    "shadow_limit_lifted": launcher is not None,
                }
            )
            await self.stop(device)
        results["scaling"] = scaling
        progress(f"outbox flush: {plan.outbox_events} events queued while offline")
        results["outbox"] = await self.outbox_flush(plan.outbox_events, tag)
        progress("footprint: import time, CLI commands, everything configured")
        results["footprint"] = await self.footprint(tag, plan.cli_trials)
        return results

    async def outbox_flush(self, count: int, tag: str) -> dict[str, Any]:
        """Fill a gateway's outbox with ``count`` events as an outage would, start the gateway,
        and time how fast the events reach the cloud."""
        from gateway.core.outbox import Change, Outbox

        thing = f"bench-outbox-{tag}"
        devices = EXAMPLE_DEVICES.replace("bounce_ms: 20}", "bounce_ms: 20, events: true}")
        state = self.workdir / thing / "state"
        state.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(state / "outbox.sqlite3", max_events=count, sync="normal")
        outbox.open()
        now = time.time() - 3600
        for start in range(0, count, 5000):
            changes = [
                Change("button", i % 2 == 0, now + i / 1000, event=True)
                for i in range(start, min(count, start + 5000))
            ]
            outbox.record(changes)
        queued = outbox.depth()
        outbox.close()
        ids: set[int] = set()
        first: list[float] = []
        last = [0.0]

        def on_events(payload: bytes, received: float) -> None:
            events = json.loads(payload).get("events") or []
            ids.update(int(event["id"]) for event in events)
            if not first:
                first.append(received)
            last[0] = received

        await self.cloud.subscribe(f"things/{thing}/events", on_events)
        started = time.perf_counter()
        device = self.spawn("gateway", thing, devices)
        deadline = started + 180
        while len(ids) < count and time.perf_counter() < deadline:
            if device.process.poll() is not None:
                tail = device.log.read_text(errors="replace")[-1500:]
                return {"status": "failed", "detail": f"gateway exited: {tail}"}
            await asyncio.sleep(0.1)
        await self.stop(device)
        if not ids:
            return {"status": "failed", "detail": f"no events arrived (queued: {queued})"}
        flush_s = last[0] - first[0]
        return {
            "status": "measured",
            "events": len(ids),
            "queued": queued,
            "lost": count - len(ids),
            "first_s": round(first[0] - started, 3),
            "flush_s": round(flush_s, 3),
            "events_per_s": round(len(ids) / flush_s, 1) if flush_s > 0 else None,
        }


def scaled_devices(count: int) -> str:
    """``count`` devices: the fan, then LEDs on the free GPIO pins, then LoadAverage sensors
    (a Pi has 26 usable GPIO pins; the rest of a large config can only be sensors)."""
    lines = ["  fan: {type: PWMLED, pin: 18}"]
    pins = [pin for pin in range(2, 28) if pin != 18]
    for index in range(1, count):
        if index <= len(pins):
            lines.append(f"  l{index:03d}: {{type: LED, pin: {pins[index - 1]}}}")
        else:
            lines.append(f"  s{index:03d}: {{type: LoadAverage, interval_s: 3600}}")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _level(index: int) -> float:
    """A PWM level in (0, 1), different from the previous 996."""
    return round((index % 997 + 1) / 1000, 3)


async def _sleep_until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


# -- environment ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key in ("Model name", "CPU(s)", "Architecture"):
                info[key.lower().replace(" ", "_").replace("(s)", "s")] = value.strip()
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        first = subprocess.run(
            ["mosquitto", "-h"], check=False, capture_output=True, text=True
        ).stdout
        info["mosquitto"] = first.splitlines()[0].removeprefix("mosquitto version ").strip()
    for package in ("edge-gateway", "aiomqtt", "paho-mqtt", "gpiozero", "awsiotsdk", "awscrt"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[package] = importlib.metadata.version(package)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        if commit:
            info["commit"] = commit
    return info


def compile_bytecode() -> None:
    """Compile the gateway's (and the bench devices') modules once, as pip does when it installs
    the wheel. A checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as the unit file sets, and
    as this machine's environment does) would otherwise compile every module at every start,
    about 0.2 s of start-up that no installed gateway pays."""
    import compileall

    import gateway

    for folder in (Path(gateway.__file__).parent, ROOT / "bench"):
        compileall.compile_dir(folder, quiet=1)


@contextlib.contextmanager
def dev_cloud(workdir: Path) -> Iterator[MosquittoBroker]:
    """mosquitto (mutual TLS, loopback) and the shadow service process, stopped on exit."""
    ca = DevCA.load_or_create(workdir / "ca")
    with MosquittoBroker(workdir / "broker", ca) as broker:
        creds = broker.credentials(broker.service_identity)
        log_path = workdir / "shadow-service.log"
        log = log_path.open("wb")
        service = subprocess.Popen(
            [sys.executable, "-m", "bench.cloud", "serve", "--host", broker.host,
             "--port", str(broker.port), "--creds", str(creds.cert.parent),
             "--max-section-bytes", str(LIFTED_SHADOW_BYTES)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while not log_path.read_text().startswith("ready"):
                if service.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the shadow service did not start: {log_path.read_text()}")
                time.sleep(0.05)
            yield broker
        finally:
            service.terminate()
            service.wait(10)
            log.close()


@contextlib.asynccontextmanager
async def provision_api(workdir: Path, broker: MosquittoBroker) -> AsyncIterator[str]:
    """The dev cloud's HTTPS Provision API (check-in, getCerts) in this process; its URL."""
    from aiohttp import web

    from gateway.devcloud.provision import ProvisionService, provision_app, server_ssl_context

    ca = DevCA.load_or_create(workdir / "ca")
    service = ProvisionService(
        workdir / "provision", ca, endpoint=broker.host, port=broker.port,
        claims={"bench-claim": "bench-claimed"},
    )  # fmt: skip
    service.prepare()
    tls = server_ssl_context(ca.issue("bench-https", workdir / "https", server=True))
    runner = web.AppRunner(provision_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"https://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def footprint_only(argv: list[str], dumps: Callable[..., str]) -> int:
    """``python -m bench.footprint``: start-up, idle and footprint rows of the gateway alone."""
    parser = argparse.ArgumentParser(prog="python -m bench.footprint")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON too")
    args = parser.parse_args(argv)
    plan = Plan.full()
    plan = Plan(**{**plan.__dict__, "startup_trials": args.trials, "cli_trials": args.trials})
    workdir = Path(tempfile.mkdtemp(prefix="egfoot-"))
    compile_bytecode()
    results: dict[str, Any] = {}
    tag = uuid.uuid4().hex[:4]
    with dev_cloud(workdir) as broker:
        async with (
            CloudApp(
                broker.host, broker.port, broker.credentials(broker.admin_identities[0])
            ) as cloud,
            provision_api(workdir, broker) as url,
        ):
            bench = Bench(plan, workdir, broker, cloud, provision_url=url)
            try:
                rss, times = [], []
                for trial in range(plan.startup_trials):
                    device, elapsed = await bench.start_synced(
                        "gateway", f"bench-start-gateway-{tag}{trial}"
                    )
                    await asyncio.sleep(plan.settle_s)
                    times.append(elapsed)
                    rss.append(rss_mb(device.pid))
                    if trial == 0 and args.idle_s:
                        results["idle"] = await bench.idle([device], args.idle_s)
                    await bench.stop(device)
                results["startup"] = {
                    "gateway": {
                        "startup_s": round(statistics.median(times), 3),
                        "rss_start_mb": round(statistics.median(rss), 1),
                    }
                }
                results["footprint"] = await bench.footprint(tag, plan.cli_trials)
            finally:
                for device in list(bench.devices):
                    await bench.stop(device)
    results["machine"] = machine()
    text = dumps(results, indent=1, sort_keys=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def _main(plan: Plan, out: Path, workdir: Path, publish: bool, command: str) -> int:
    """Run with the in-process gateway logging like the daemon (to a file), then put the
    process's logging back as it was (the smoke test runs inside pytest)."""
    import logging

    import structlog

    from gateway.ops.logs import configure_logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    with (workdir / "bench.log").open("w") as log_stream:
        configure_logging("json", "info", stream=log_stream)
        try:
            return await _measure_and_write(plan, out, workdir, publish, command)
        finally:
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            structlog.configure(**saved_structlog)


async def _measure_and_write(
    plan: Plan, out: Path, workdir: Path, publish: bool, command: str
) -> int:
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    compile_bytecode()
    progress(f"dev cloud in {workdir}")
    with dev_cloud(workdir) as broker:
        async with (
            CloudApp(
                broker.host, broker.port, broker.credentials(broker.admin_identities[0])
            ) as cloud,
            provision_api(workdir, broker) as url,
        ):
            bench = Bench(plan, workdir, broker, cloud, provision_url=url)
            try:
                results = await bench.run(progress)
            finally:
                for device in list(bench.devices):
                    await bench.stop(device)
    soak = ROOT / "bench" / "results" / "soak.json"  # the last python -m bench.soak --out
    if soak.exists():
        results["soak"] = json.loads(soak.read_text())
    results["meta"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "mode": "smoke" if plan.smoke else "full",
        "plan": plan.__dict__,
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    from bench.report import publish_benchmarks, write_outputs

    write_outputs(results, out)
    if publish:
        publish_benchmarks(results, ROOT / "BENCHMARKS.md")
    progress(f"done: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few rounds of each (CI)")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results)")
    parser.add_argument(
        "--no-publish", action="store_true", help="do not update BENCHMARKS.md (full run only)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.smoke else Plan.full()
    out = args.out or ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    publish = not args.smoke and not args.no_publish
    command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    # Short path: mosquitto.conf cannot quote spaces, and admin sockets have a 108-byte limit.
    workdir = Path(tempfile.mkdtemp(prefix="egbench-"))
    try:
        return asyncio.run(_main(plan, out, workdir, publish, command))
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
