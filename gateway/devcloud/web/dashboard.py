"""The dashboard's HTTP side (aiohttp): the page, a JSON API and a Server-Sent Events feed.

Plain HTTP, meant for loopback only. Everything (HTML, JS, CSS) is served from the package;
nothing from a CDN.

- ``GET /`` the page (it carries this run's token); ``GET /static/...`` its assets
- ``GET /api/things`` every thing (status, shadows, control hints, check-in, recent events,
  the charts' last hour)
- ``GET /api/events`` Server-Sent Events: a ``snapshot`` then ``thing``, ``event`` and ``points``
- ``POST /api/things/{thing}/desired`` ``{"desired": {...}, "shadow": null}`` sets desired state
  of a thing the dev cloud knows (404 for any other name: nothing is created)
- ``/api/mindconnect...`` MindConnect agents and commands (gateway.devcloud.web.mindconnect)

docs/devcloud.md documents each route.

Other pages in the same browser must not drive it (a no-cors ``text/plain`` POST needs no
preflight, and DNS rebinding turns a foreign name into ours), so ``DashboardGuard`` refuses:
any request whose ``Host`` is not the bound address (403); and a state-changing request
without ``Content-Type: application/json`` (415), without an ``Origin`` equal to the
dashboard's own (403), or without this run's token in ``X-Dashboard-Token`` (403). The token
is made per run with ``secrets.token_urlsafe`` and served only inside the page, which other
origins cannot read.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
from aiohttp import web

from gateway.devcloud.shadowdoc import (
    MAX_NESTING,
    ShadowRequestError,
    check_nesting,
    loads_bounded,
)
from gateway.devcloud.web.hub import DashboardHub, DesiredRejectedError

if TYPE_CHECKING:
    from gateway.devcloud.mindconnect import MindConnectSide

__all__ = ["STATIC_DIR", "TOKEN_HEADER", "TOKEN_META", "DashboardGuard", "dashboard_app"]

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
TOKEN_HEADER: Final = "X-Dashboard-Token"
TOKEN_META: Final = "dashboard-token"
_TOKEN_PLACEHOLDER: Final = "{{dashboard_token}}"
_HUB_KEY: Final = web.AppKey("dashboard_hub", DashboardHub)
_KEEPALIVE_S: Final = 15.0
_MAX_BODY: Final = 64 * 1024
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})
# AWS IoT thing and shadow names: letters, digits, ':', '_', '-' (128 and 64 characters).
_THING_NAME: Final = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_SHADOW_NAME: Final = re.compile(r"[A-Za-z0-9:_-]{1,64}")
_PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",  # the token changes with every run: never reuse a page
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
}

log = structlog.get_logger()
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": status}, status=status)


def _split_host(header: str) -> tuple[str, int] | None:
    """``Host`` as (lower-case name without brackets, port); None if malformed."""
    name, port = header.strip().lower(), "80"
    if name.startswith("["):
        name, bracket, rest = name[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or port
    elif ":" in name:
        name, _, port = name.partition(":")
    if not name or not port.isascii() or not port.isdigit() or len(port) > 5:
        return None
    return name, int(port)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class DashboardGuard:
    """The checks every dashboard request passes (see the module docstring).

    Until ``bind`` names the listening address every request is refused: fail closed.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token if token is not None else secrets.token_urlsafe(32)
        self._names: frozenset[str] = frozenset()
        self._any_ip = False
        self._port: int | None = None

    def bind(self, host: str, port: int) -> None:
        """The address the dashboard listens on; loopback also answers to ``localhost``."""
        name = host.strip("[]").lower()
        names = {name}
        ip = _ip(name)
        self._any_ip = name in _WILDCARDS
        if self._any_ip or name == "localhost":
            names |= {"localhost", "127.0.0.1", "::1"}
        elif ip is not None and ip.is_loopback:
            names.add("localhost")
        self._names = frozenset(names - _WILDCARDS)
        self._port = port

    def host_allowed(self, header: str | None) -> bool:
        """Whether ``Host`` names this dashboard (a foreign name means DNS rebinding)."""
        parsed = _split_host(header) if header else None
        if parsed is None or self._port is None or parsed[1] != self._port:
            return False
        name = parsed[0]
        # Bound to every address, any IP literal may reach us; names other than localhost
        # could be rebound, so they are still refused.
        return name in self._names or (self._any_ip and _ip(name) is not None)

    def refusal(self, request: web.Request) -> web.Response | None:
        """The error response for a request that may not proceed; None if it may."""
        host = request.headers.get("Host")
        if not self.host_allowed(host):
            return _error(403, "Host is not this dashboard's address")
        if request.method in _SAFE_METHODS:
            return None
        origin = request.headers.get("Origin")
        if origin is None or origin.lower() != f"http://{host}".lower():
            return _error(403, "cross-origin request refused: Origin must be this dashboard")
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            return _error(403, "cross-site request refused")
        if request.content_type != "application/json":
            return _error(415, "Content-Type must be application/json")
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _error(403, "missing or stale dashboard token: reload the page")
        return None


_GUARD_KEY: Final = web.AppKey("dashboard_guard", DashboardGuard)


@web.middleware
async def _guarded(request: web.Request, handler: _Handler) -> web.StreamResponse:
    refusal = request.app[_GUARD_KEY].refusal(request)
    if refusal is not None:
        log.warning(  # by its shape only: the headers and path are the sender's
            "dashboard_request_refused",
            method=request.method,
            status=refusal.status,
            has_origin="Origin" in request.headers,
            has_token=TOKEN_HEADER in request.headers,
        )
        return refusal
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


def _page(token: str) -> str:
    return (STATIC_DIR / "index.html").read_text().replace(_TOKEN_PLACEHOLDER, token)


async def _index(request: web.Request) -> web.Response:
    html = await asyncio.to_thread(_page, request.app[_GUARD_KEY].token)
    return web.Response(text=html, content_type="text/html", headers=_PAGE_HEADERS)


async def _things(request: web.Request) -> web.Response:
    return web.json_response(request.app[_HUB_KEY].things(), dumps=_dumps)


async def _events(request: web.Request) -> web.StreamResponse:
    hub = request.app[_HUB_KEY]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        async with hub.subscribe() as queue:
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE_S):
                        message = await queue.get()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if message is None:
                    break
                await response.write(f"data: {_dumps(message)}\n\n".encode())
    except ConnectionResetError:
        # A closed tab or a reload: normal for a stream that never ends on its own. (aiohttp's
        # ClientConnectionResetError is a ConnectionResetError.)
        log.info("dashboard_stream_closed")
    return response


async def _set_desired(request: web.Request) -> web.Response:
    """Refuse what the shadow would refuse (the same parser and bounds), then forward."""
    hub = request.app[_HUB_KEY]
    thing = request.match_info["thing"]
    if not _THING_NAME.fullmatch(thing):
        return _error(400, "invalid thing name")
    if not hub.knows(thing):
        # Publishing would make the shadow service create a shadow, and the dashboard a thing,
        # for a typo: only things the dev cloud knows (a batch thing, one that connected or has
        # a shadow) can be changed.
        return _error(404, f"no thing named {thing!r} in this dev cloud")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "The payload exceeds the maximum size allowed")
    try:
        # The body nests "desired" one level below its own object, as "state" does for AWS.
        body = loads_bounded(raw, max_nesting=MAX_NESTING + 1, max_bytes=_MAX_BODY)
    except ShadowRequestError as exc:
        return _error(exc.code, exc.message)
    desired = body.get("desired") if isinstance(body, dict) else None
    shadow = body.get("shadow") if isinstance(body, dict) else None
    if not isinstance(desired, dict) or not desired:
        return _error(400, "'desired' must be a non-empty object")
    if shadow is not None and (not isinstance(shadow, str) or not _SHADOW_NAME.fullmatch(shadow)):
        return _error(400, "'shadow' must be null or a shadow name")
    try:
        check_nesting(desired)
        version = await hub.update_desired(thing, desired, shadow)
    except (ShadowRequestError, DesiredRejectedError) as exc:
        status = exc.code if 400 <= exc.code < 600 else 502
        return _error(status, exc.message)
    return web.json_response({"version": version})


def dashboard_app(
    hub: DashboardHub,
    guard: DashboardGuard | None = None,
    *,
    mindconnect: MindConnectSide | None = None,
) -> web.Application:
    """The dashboard application; serve it on loopback (plain HTTP) and call ``guard.bind``
    with the address it listens on, or every request is refused."""
    app = web.Application(client_max_size=_MAX_BODY, middlewares=[_guarded])
    app[_HUB_KEY] = hub
    app[_GUARD_KEY] = guard if guard is not None else DashboardGuard()
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", _index)
    app.router.add_get("/api/things", _things)
    app.router.add_get("/api/events", _events)
    app.router.add_post("/api/things/{thing}/desired", _set_desired)
    if mindconnect is not None:
        from gateway.devcloud.web.mindconnect import add_dashboard_routes

        add_dashboard_routes(app, mindconnect)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app
