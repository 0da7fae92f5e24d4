"""The text formats config values take (pure): URLs, listen addresses, maintenance windows.

They live here so the config can check them without importing the modules that use them
(``gateway.updates.checkin`` re-exports ``url_problem``, ``is_loopback_host`` and ``Window``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import time as clock_time
from urllib.parse import urlsplit

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be used, or None: https only, plain http only for a loopback host
    (the local dev cloud), never credentials in the URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("https", "http") or not host:
        return "expected an https:// URL"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed; use a token file"
    if parts.scheme == "http" and not is_loopback_host(host):
        return "expected https:// (plain http:// is accepted only for a loopback host)"
    return None


def parse_listen(value: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9108`` for IPv6) as an IP literal and a port."""
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9108")
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError("expected HOST:PORT with an IP address, such as 127.0.0.1:9108") from None
    if not sep or not 1 <= number <= 65_535:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535")
    return host, number


@dataclass(frozen=True)
class Window:
    """A daily maintenance window in local time; it may wrap midnight (``22:00-02:00``)."""

    start: clock_time
    end: clock_time

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError("expected a window like '02:00-04:00' (local time, HH:MM-HH:MM)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError("hours must be 0-23 and minutes 0-59")
        if (h1, m1) == (h2, m2):
            raise ValueError("the window must not be empty (start equals end)")
        return cls(clock_time(h1, m1), clock_time(h2, m2))

    def _minutes(self) -> tuple[int, int]:
        return self.start.hour * 60 + self.start.minute, self.end.hour * 60 + self.end.minute

    def is_open(self, now: clock_time) -> bool:
        start, end = self._minutes()
        minute = now.hour * 60 + now.minute
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end  # wraps midnight

    def seconds_until_open(self, now: clock_time) -> float:
        """0 while open, else the seconds until it opens next."""
        if self.is_open(now):
            return 0.0
        start, _ = self._minutes()
        seconds = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        return (start * 60 - seconds) % 86_400
