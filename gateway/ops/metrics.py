"""Prometheus metrics and ``/healthz`` over HTTP, from the same status the admin socket's
``status`` command returns; served by a small asyncio HTTP/1.1 server (no web framework).

``render_prometheus`` is pure: status mapping (and the process figures) in, text exposition
format out. A value the gateway does not have yet (no check-in so far) is left out, never
invented. Names follow Prometheus conventions: base units (``_seconds``, ``_bytes``,
``_timestamp_seconds``), ``_total`` counters, and the standard ``process_*`` figures read from
``/proc``. Older names that are not in base units stay (public names are never renamed) beside
their base-unit twins. ``serve_metrics`` is the thin adapter; it serves until cancelled.

The server reads at most ``MAX_REQUEST_BYTES`` of a request head within ``READ_TIMEOUT_S``,
answers ``GET``/``HEAD`` on ``/metrics`` and ``/healthz`` (404 elsewhere, 405 for other
methods, 400 for what is not HTTP), one request per connection, at most ``MAX_CLIENTS`` at
once. It was measured against ``prometheus_client`` (its exposition needs ~4 MB more RSS, its
own server a thread outside the gateway's task group): this is the lighter one.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args

import structlog

from gateway.updates.otastate import OtaPhase

log = structlog.get_logger()

PREFIX = "edge_gateway_"
StatusSource = Callable[[], Mapping[str, Any]]
MAX_REQUEST_BYTES = 8 * 1024  # request line and headers; a scrape sends a few hundred
READ_TIMEOUT_S = 5.0  # for the whole request head
WRITE_TIMEOUT_S = 5.0  # for the answer to leave
MAX_CLIENTS = 8  # connections served at once; more are closed at once
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTA_STATES: tuple[str, ...] = get_args(OtaPhase)
# Older names kept as they are, each beside a base-unit twin (promtool flags the old ones).
LEGACY_NON_BASE_UNITS = ("edge_gateway_certificate_days_left",)

# (status key, metric name, type, help); counters live under status["counters"].
_GAUGES = (
    ("connected", "mqtt_connected", "1 while the MQTT connection is up and subscribed"),
    ("synced", "shadow_synced", "1 once a fetched shadow document has been reconciled"),
    ("in_flight", "shadow_requests_in_flight", "shadow requests sent and not yet answered"),
    ("queued", "shadow_requests_queued", "shadow requests waiting to be sent (bounded, merged)"),
    ("outbox_depth", "outbox_depth", "accepted changes and events waiting in the outbox"),
    ("outbox_in_memory", "outbox_in_memory", "1 while the outbox holds changes in memory"),
    (
        "outbox_in_memory_entries",
        "outbox_in_memory_entries",
        "changes and events held in memory because the outbox's disk failed",
    ),
    ("last_checkin_at", "last_checkin_timestamp_seconds", "time of the last successful check-in"),
    ("certificate_days_left", "certificate_days_left", "days until the client cert expires"),
    (
        "certificate_expires_at",
        "certificate_expiry_timestamp_seconds",
        "when the client certificate expires (Unix time)",
    ),
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
    (
        "outbox_dropped_events",
        "outbox_dropped_events_total",
        "events dropped by the outbox's bound or as unreadable",
    ),
)
# The standard process figures (the names every Prometheus client library exports).
_PROCESS = (
    ("cpu_seconds", "process_cpu_seconds_total", "counter", "user and system CPU time spent"),
    ("resident_bytes", "process_resident_memory_bytes", "gauge", "resident memory size"),
    ("virtual_bytes", "process_virtual_memory_bytes", "gauge", "virtual memory size"),
    ("start_time", "process_start_time_seconds", "gauge", "start time of the process (Unix time)"),
    ("open_fds", "process_open_fds", "gauge", "open file descriptors"),
    ("max_fds", "process_max_fds", "gauge", "the limit on open file descriptors"),
)


# The THiNX link (status["links"]["thinx"]): (key, metric name, type, help).
_THINX = (
    ("registered", "thinx_registered", "gauge", "1 once THiNX has assigned this device a udid"),
    ("connected", "thinx_mqtt_connected", "gauge", "1 while logged in to THiNX's broker"),
    ("last_checkin_at", "thinx_last_checkin_timestamp_seconds", "gauge", "last THiNX check-in"),
    ("checkin_failures", "thinx_checkin_failures_total", "counter", "failed THiNX check-ins"),
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
    lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {number}"]


def render_prometheus(status: Mapping[str, Any], process: Mapping[str, float] | None = None) -> str:
    """The status (and the ``process_figures``, when given) as Prometheus text exposition
    format (version 0.0.4)."""
    lines = [
        f"# HELP {PREFIX}info the running gateway",
        f"# TYPE {PREFIX}info gauge",
        f"{PREFIX}info{{version={_label(status.get('version', ''))},"
        f"thing={_label(status.get('thing', ''))}}} 1",
    ]
    for key, name, text in _GAUGES:
        _family(lines, PREFIX + name, "gauge", text, status.get(key))
    devices = status.get("devices")
    if isinstance(devices, Mapping):
        _family(lines, f"{PREFIX}devices", "gauge", "configured devices", len(devices))
    errors = status.get("errors")
    if isinstance(errors, Mapping):
        text = "devices whose last desired value failed"
        _family(lines, f"{PREFIX}device_errors", "gauge", text, len(errors))
    counters = {**status, **(status.get("counters") or {})}
    for key, name, text in _COUNTERS:
        _family(lines, PREFIX + name, "counter", text, counters.get(key))
    _ota_state(lines, status.get("ota"))
    for key, name, kind, text in _PROCESS:
        _family(lines, name, kind, text, (process or {}).get(key))
    thinx = (status.get("links") or {}).get("thinx")
    if isinstance(thinx, Mapping):
        for key, name, kind, text in _THINX:
            _family(lines, PREFIX + name, kind, text, thinx.get(key))
    links = status.get("links")
    if isinstance(links, Mapping):
        _links(lines, links)
    return "\n".join(lines) + "\n"


def _ota_state(lines: list[str], ota: object) -> None:
    """One sample per OTA phase, 1 for the current one (a state set, as Prometheus wants it)."""
    if not isinstance(ota, Mapping) or ota.get("state") not in OTA_STATES:
        return
    name = f"{PREFIX}ota_state"
    lines += [f"# HELP {name} the update's phase (1 for the current one)", f"# TYPE {name} gauge"]
    lines += [
        f"{name}{{state={_label(state)}}} {1 if state == ota['state'] else 0}"
        for state in OTA_STATES
    ]


def process_figures(proc: Path = Path("/proc")) -> dict[str, float]:
    """This process's CPU time, memory, start time and descriptors, from ``/proc`` (see
    proc(5)); an empty mapping where there is no ``/proc``. Blocking: run it in a thread."""
    try:
        stat = (proc / "self" / "stat").read_bytes()
        boot = next(
            float(line.split()[1])
            for line in (proc / "stat").read_bytes().splitlines()
            if line.startswith(b"btime ")
        )
        open_fds = len(os.listdir(proc / "self" / "fd"))
    except (OSError, StopIteration, ValueError, IndexError):
        return {}
    # After the command name's closing parenthesis: field 3 (state) onwards.
    fields = stat.rsplit(b")", 1)[-1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    figures = {
        "cpu_seconds": (int(fields[11]) + int(fields[12])) / ticks,  # utime, stime
        "start_time": boot + int(fields[19]) / ticks,  # starttime, in ticks since boot
        "virtual_bytes": float(int(fields[20])),  # vsize
        "resident_bytes": float(int(fields[21]) * resource.getpagesize()),  # rss, in pages
        "open_fds": float(open_fds),
    }
    if soft_limit != resource.RLIM_INFINITY:
        figures["max_fds"] = float(soft_limit)
    return figures


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
    clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(clients) >= MAX_CLIENTS:
            writer.close()  # a flood of scrapers: the gateway's work comes first
            return
        clients[task] = writer
        try:
            await _serve_one(reader, writer, status)
        finally:
            del clients[task]
            writer.close()  # gracefully: what was written still reaches the scraper

    try:
        server = await asyncio.start_server(
            connected, host, port, reuse_address=True, limit=MAX_REQUEST_BYTES
        )
    except OSError as exc:
        log.error("metrics_unavailable", host=host, port=port, error=str(exc))
        return
    log.info("metrics_listening", host=host, port=port)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()  # serve until cancelled
    finally:
        server.close()
        # The connections end with the server, not after it: cut, each handler returns at once
        # (cancelling them instead makes Python 3.11's streams log a traceback).
        for writer in clients.values():
            writer.transport.abort()
        if clients:
            await asyncio.wait(list(clients), timeout=WRITE_TIMEOUT_S)


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: StatusSource
) -> None:
    """Read one request head (bounded in size and time) and write its answer."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return  # too slow, too long or gone: nothing worth an answer (nor a log line)
    method, path = _request_line(head)
    answer = await _answer(method, path, status)
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            writer.write(answer)
            await writer.drain()
    except (TimeoutError, OSError):
        return  # the scraper went away


def _request_line(head: bytes) -> tuple[str, str]:
    """The method and path (without its query) of a request head; ("", "") if it is not
    HTTP/1.x."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return "", ""
    method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    return method, target.split("?", 1)[0]


async def _answer(method: str, path: str, status: StatusSource) -> bytes:
    if not method:
        return _response(400, "Bad Request", b"not an HTTP/1.x request\n", "text/plain")
    if path not in ("/metrics", "/healthz"):
        return _response(404, "Not Found", b"try /metrics or /healthz\n", "text/plain")
    if method not in ("GET", "HEAD"):
        body = b"only GET and HEAD\n"
        return _response(405, "Method Not Allowed", body, "text/plain", allow="GET, HEAD")
    current = status()  # on the loop: the status is read where it is written
    if path == "/metrics":
        process = await asyncio.to_thread(process_figures)
        body = render_prometheus(current, process).encode()
        code, reason, kind = 200, "OK", CONTENT_TYPE
    else:
        health = {key: current.get(key) for key in ("healthy", "connected", "synced")}
        body = (json.dumps(health) + "\n").encode()
        healthy = bool(current.get("healthy"))
        code, reason = (200, "OK") if healthy else (503, "Service Unavailable")
        kind = "application/json"
    return _response(code, reason, body, kind, head_only=method == "HEAD")


def _response(
    code: int,
    reason: str,
    body: bytes,
    content_type: str,
    *,
    allow: str | None = None,
    head_only: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {code} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if allow is not None:
        lines.append(f"Allow: {allow}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
