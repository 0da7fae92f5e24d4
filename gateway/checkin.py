"""Check-in with the device cloud: the pure decisions (no I/O).

The gateway ``POST``s ``{"id", "productId", "test", "version", ...extra}`` to the Provision
API's ``/provision/checkin`` and gets ``{"version", "url", "checksum"[, "signature"]}`` back; an
empty answer, an absent version or the running version means "up to date". What to do with an
offer, when to check in next and whether the maintenance window is open are decided here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import time as clock_time
from typing import Any
from urllib.parse import urlsplit

JITTER = 0.1  # check-ins are spread by ±10 % so a fleet does not arrive at once
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
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


@dataclass(frozen=True)
class Offer:
    """An update the cloud offers: a version, where to get it and its SHA-256."""

    version: str
    url: str
    checksum: str  # lower-case hex SHA-256
    signature: str | None = None  # base64, when the answer carries it instead of <url>.sig


class OfferError(ValueError):
    """The check-in answer is malformed (reported as an update error by the caller)."""


def checkin_body(
    *,
    thing: str,
    product_id: str,
    test: bool,
    version: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body: configured extra fields never override the four standard ones."""
    return {
        **dict(extra or {}),
        "id": thing,
        "productId": product_id,
        "test": test,
        "version": version,
    }


def parse_offer(body: object, running_version: str) -> Offer | None:
    """The offer in a check-in answer, or None when the device is up to date."""
    if body is None or body == {}:
        return None
    if not isinstance(body, Mapping):
        raise OfferError("expected a JSON object")
    version = body.get("version")
    if version in (None, "") or version == running_version:
        return None
    if not isinstance(version, str):
        raise OfferError("'version' must be a string")
    url, checksum, signature = body.get("url"), body.get("checksum"), body.get("signature")
    if not isinstance(url, str) or not url:
        raise OfferError("an offer needs a 'url'")
    if (problem := url_problem(url)) is not None:
        raise OfferError(f"offered url {url!r}: {problem}")
    if not isinstance(checksum, str) or not _HEX64.match(checksum):
        raise OfferError("an offer needs 'checksum': the artifact's SHA-256 as 64 hex digits")
    if signature is not None and (not isinstance(signature, str) or not signature):
        raise OfferError("'signature' must be a base64 string")
    return Offer(version, url, checksum.lower(), signature)


@dataclass(frozen=True)
class Attempt:
    """A version (with the artifact's checksum) the device installed and rolled back from."""

    version: str
    checksum: str


def should_apply(
    offer: Offer, *, running_version: str, rolled_back: Iterable[Attempt]
) -> str | None:
    """Why ``offer`` is skipped, or None to go ahead. A version rolled back from is offered
    again only with a different artifact (checksum)."""
    if offer.version == running_version:
        return "up to date"
    if Attempt(offer.version, offer.checksum) in set(rolled_back):
        return "this artifact was rolled back before"
    return None


def next_checkin_s(interval_s: float, rng: Callable[[float, float], float]) -> float:
    """The next regular check-in: ``interval_s`` ±10 %."""
    return interval_s * rng(1.0 - JITTER, 1.0 + JITTER)


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
