"""systemd's notify protocol: ``KEY=VALUE`` lines in one datagram to ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same way
under a terminal, a test or the service manager. Sending never blocks and never raises: a
service manager that went away must not take the gateway down with it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger()

STATUS_INTERVAL_S = 1.0  # how often the STATUS= line is looked at (sent when it changed)


def socket_address(env: Mapping[str, str]) -> str | bytes | None:
    """The notify socket from ``env``: a path, or an abstract name (leading ``@``)."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path if path.startswith("/") else None


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to ping: half of ``WATCHDOG_USEC``, or None when no watchdog is asked for
    (unset, invalid, or ``WATCHDOG_PID`` names another process)."""
    owner = env.get("WATCHDOG_PID")
    if owner is not None and owner != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def status_line(text: str) -> str:
    """A ``STATUS=`` value: one line, as systemctl shows it."""
    return " ".join(text.split())


class Notifier:
    """Sends notify messages to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = socket_address(env)
        self.watchdog_interval_s = watchdog_interval_s(env, os.getpid())
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` fields (``send(READY=1, STATUS="...")``); True if delivered."""
        if self._socket is None or self._address is None:
            return False
        body = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self._socket.sendto(body.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), fields=sorted(fields))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status_line(status))

    def status(self, status: str) -> bool:
        return self.send(STATUS=status_line(status))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to the signal.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def notify_loop(
    notifier: Notifier,
    *,
    status_line: Callable[[], str],
    ready: Callable[[], bool],
    healthy: Callable[[], bool],
    ended_tasks: Callable[[], list[str]],
    reloading: Callable[[], bool],
) -> None:
    """READY=1 once ``ready()``, STATUS= when the line changes, WATCHDOG=1 while healthy.

    A ping needs this task to run, so a blocked event loop stops the pings by itself; a
    finished supervised task withholds them, and systemd restarts the service."""
    loop = asyncio.get_running_loop()
    interval = notifier.watchdog_interval_s
    next_ping = loop.time()
    ready_sent = False
    last_status = ""
    while True:
        now = loop.time()
        line = status_line()
        if not ready_sent and ready():
            notifier.ready(line)
            log.info("service_ready", status=line)
            ready_sent = True
            last_status = line
        elif line != last_status and not reloading():
            notifier.status(line)
            last_status = line
        if interval is not None and now >= next_ping:
            if now - next_ping > interval:
                log.warning("event_loop_stalled", late_s=round(now - next_ping, 3))
            if healthy():
                notifier.watchdog()
            else:
                log.error("watchdog_withheld", ended_tasks=ended_tasks())
            next_ping = now + interval
        if ready_sent and not notifier.enabled:
            # No service manager listens (no NOTIFY_SOCKET): nothing left to send, so this task
            # stays parked instead of waking every second for a status nobody reads.
            await asyncio.Event().wait()
        wait = STATUS_INTERVAL_S
        if interval is not None:
            wait = min(wait, max(0.0, next_ping - loop.time()))
        await asyncio.sleep(wait)
