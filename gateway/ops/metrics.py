"""Prometheus metrics and ``/healthz`` over HTTP (aiohttp), from the same status the admin
socket's ``status`` command returns.

``render_prometheus`` is pure: status mapping in, text exposition format out. A value the
gateway does not have yet (no check-in so far) is left out, never invented.
``serve_metrics`` is the thin adapter; it serves until cancelled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger()

PREFIX = "edge_gateway_"
StatusSource = Callable[[], Mapping[str, Any]]

# (status key, metric name, type, help); counters live under status["counters"].
_GAUGES = (
    ("connected", "mqtt_connected", "1 while the MQTT connection is up and subscribed"),
    ("synced", "shadow_synced", "1 once a fetched shadow document has been reconciled"),
    ("in_flight", "shadow_requests_in_flight", "shadow requests sent and not yet answered"),
    ("queued", "shadow_requests_queued", "shadow requests waiting to be sent (bounded, merged)"),
    ("outbox_depth", "outbox_depth", "accepted changes and events waiting in the outbox"),
    ("last_checkin_at", "last_checkin_timestamp_seconds", "time of the last successful check-in"),
    ("certificate_days_left", "certificate_days_left", "days until the client cert expires"),
    ("shadow_version", "shadow_version", "newest shadow version seen"),
    ("healthy", "healthy", "1 while the event loop and the gateway's tasks are alive"),
)
_COUNTERS = (
    ("reconnects", "mqtt_reconnects_total", "MQTT connection attempts after the first"),
    ("deltas_applied", "deltas_applied_total", "desired values applied to a device"),
    ("deltas_rejected", "deltas_rejected_total", "desired values rejected (invalid or failed)"),
    ("deltas_stale", "deltas_stale_total", "deltas ignored as older than the newest version"),
    ("messages_dropped", "messages_dropped_total", "inbound messages dropped as unusable"),
    ("reloads_applied", "config_reloads_applied_total", "config reloads applied"),
    ("reloads_rejected", "config_reloads_rejected_total", "config reloads rejected as invalid"),
)


# Per cloud link beside the shadow (status["links"][name]), labelled link="<name>"; a link
# exports the ones it has.
_LINK_FIGURES = (
    ("connected", "link_connected", "gauge", "1 while the link's connection is up"),
    ("queue_depth", "link_queue_depth", "gauge", "values waiting in the link's outbox"),
    ("last_publish_at", "link_last_publish_timestamp_seconds", "gauge", "the link's last publish"),
    ("points_sent", "link_points_sent_total", "counter", "time series points delivered"),
    ("commands_executed", "link_commands_executed_total", "counter", "commands carried out"),
    ("commands_failed", "link_commands_failed_total", "counter", "commands answered FAILED"),
    ("commands_dropped", "link_commands_dropped_total", "counter", "commands too broken to answer"),
    ("reconnects", "link_reconnects_total", "counter", "connection attempts after the first"),
)


def _links(lines: list[str], links: Mapping[str, Any]) -> None:
    for key, name, kind, text in _LINK_FIGURES:
        samples = [
            f"{PREFIX}{name}{{link={_label(link)}}} {number}"
            for link, figures in sorted(links.items())
            if isinstance(figures, Mapping) and (number := _number(figures.get(key))) is not None
        ]
        if samples:
            lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}", *samples]


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'"{text}"'


def _number(value: object) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return None


def _family(lines: list[str], name: str, kind: str, text: str, value: object) -> None:
    number = _number(value)
    if number is None:
        return  # unknown or not applicable: leave the metric out
    lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"]
    lines.append(f"{PREFIX}{name} {number}")


def render_prometheus(status: Mapping[str, Any]) -> str:
    """The status as Prometheus text exposition format (version 0.0.4)."""
    lines = [
        f"# HELP {PREFIX}info the running gateway",
        f"# TYPE {PREFIX}info gauge",
        f"{PREFIX}info{{version={_label(status.get('version', ''))},"
        f"thing={_label(status.get('thing', ''))}}} 1",
    ]
    for key, name, text in _GAUGES:
        _family(lines, name, "gauge", text, status.get(key))
    devices = status.get("devices")
    if isinstance(devices, Mapping):
        _family(lines, "devices", "gauge", "configured devices", len(devices))
    errors = status.get("errors")
    if isinstance(errors, Mapping):
        _family(
            lines, "device_errors", "gauge", "devices whose last desired value failed", len(errors)
        )
    counters = {**status, **(status.get("counters") or {})}
    for key, name, text in _COUNTERS:
        _family(lines, name, "counter", text, counters.get(key))
    links = status.get("links")
    if isinstance(links, Mapping):
        _links(lines, links)
    return "\n".join(lines) + "\n"


def certificate_expiry(cert: Path) -> float | None:
    """When ``cert`` (PEM) expires, as epoch seconds; None if it cannot be read.

    Blocking (reads the file): run it in a thread."""
    from cryptography import x509

    from gateway.core.credfiles import CredentialFileError, read_credential_file

    try:
        certificate = x509.load_pem_x509_certificate(read_credential_file(cert, "certificate"))
    except (CredentialFileError, ValueError) as exc:
        log.warning("certificate_unreadable", path=str(cert), error=str(exc))
        return None
    return certificate.not_valid_after_utc.timestamp()


async def serve_metrics(
    host: str, port: int, status: StatusSource, ready: asyncio.Event | None = None
) -> None:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` until cancelled.

    A port that cannot be bound is logged and the gateway carries on without metrics: its
    job is the devices and the shadow, and a restart loop would not free the port.
    """
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            text=render_prometheus(status()), content_type="text/plain", charset="utf-8"
        )

    async def healthz(_: web.Request) -> web.Response:
        current = status()
        body = {key: current.get(key) for key in ("healthy", "connected", "synced")}
        return web.Response(
            text=json.dumps(body) + "\n",
            status=200 if current.get("healthy") else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("metrics_unavailable", host=host, port=port, error=str(exc))
            return
        log.info("metrics_listening", host=host, port=port)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()  # serve until cancelled
    finally:
        await runner.cleanup()
