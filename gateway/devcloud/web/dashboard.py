"""The dashboard's HTTP side (aiohttp): the page, a JSON API and a Server-Sent Events feed.

Plain HTTP, meant for loopback only: it has no authentication, like the rest of the dev cloud's
admin surface. Everything (HTML, JS, CSS) is served from the package; nothing from a CDN.

- ``GET /`` the page; ``GET /static/...`` its assets
- ``GET /api/things`` every thing (status, shadows, control hints, check-in, recent events)
- ``GET /api/events`` Server-Sent Events: a ``snapshot`` then ``thing`` and ``event`` changes
- ``POST /api/things/{thing}/desired`` ``{"desired": {...}, "shadow": null}`` sets desired state
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.devcloud.web.hub import DashboardHub, DesiredRejectedError

__all__ = ["STATIC_DIR", "dashboard_app"]

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
_HUB_KEY: Final = web.AppKey("dashboard_hub", DashboardHub)
_KEEPALIVE_S: Final = 15.0
_MAX_BODY: Final = 64 * 1024


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


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
    return response


async def _set_desired(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    desired = body.get("desired") if isinstance(body, dict) else None
    shadow = body.get("shadow") if isinstance(body, dict) else None
    if not isinstance(desired, dict) or not desired:
        return web.json_response({"error": "'desired' must be a non-empty object"}, status=400)
    if shadow is not None and (not isinstance(shadow, str) or not shadow):
        return web.json_response({"error": "'shadow' must be null or a name"}, status=400)
    try:
        version = await hub.update_desired(request.match_info["thing"], desired, shadow)
    except DesiredRejectedError as exc:
        status = exc.code if 400 <= exc.code < 600 else 502
        return web.json_response({"error": exc.message, "code": exc.code}, status=status)
    return web.json_response({"version": version})


def dashboard_app(hub: DashboardHub) -> web.Application:
    """The dashboard application; serve it on loopback (plain HTTP)."""
    app = web.Application(client_max_size=_MAX_BODY)
    app[_HUB_KEY] = hub
    app.router.add_get("/", _index)
    app.router.add_get("/api/things", _things)
    app.router.add_get("/api/events", _events)
    app.router.add_post("/api/things/{thing}/desired", _set_desired)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app
