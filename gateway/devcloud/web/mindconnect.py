"""The dashboard's MindConnect routes (behind the dashboard's guard, like every route).

- ``GET /api/mindconnect``: the tenant (name, app id, answer shape, CAs, broker) and every agent
  (issued a certificate, or sent something) with its latest values, recent events, commands,
  answers and refused messages
- ``GET /api/mindconnect/agents/{clientId}``: one agent (404 for a client id never seen)
- ``POST /api/mindconnect/agents/{clientId}/commands`` ``{"payload": {...}, "jobId": optional}``
  publishes a command on the agent's ``i/cmd_v3/c``; 202 ``{"id", "jobId", "clientId",
  "payload", "sentAt"}``. The answer arrives later (``answers`` of the agent, and the feed).

- ``POST /api/mindconnect/cas`` ``{"ca": PEM, "verification": PEM}``
  registers the environment's own CA (CN of the verification certificate = the tenant's
  registration code) and restarts the broker to trust it; 200 ``{"ownCas", "added"}``

The event feed (``GET /api/events``) carries ``{"type": "mindconnect", "agent": {...}}`` when an
agent's data changes.
"""

from __future__ import annotations

import re
from typing import Any, Final

import structlog
from aiohttp import web

from gateway.devcloud.mindconnect import MindConnectError, MindConnectRequestError, MindConnectSide
from gateway.devcloud.shadowdoc import MAX_NESTING, ShadowRequestError, loads_bounded

__all__ = ["add_dashboard_routes"]

_SIDE_KEY: Final = web.AppKey("dashboard_mindconnect", MindConnectSide)
_CLIENT_ID: Final = re.compile(r"[a-z0-9]{1,32}_[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
_MAX_BODY: Final = 16 * 1024

log = structlog.get_logger()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": status}, status=status)


def _known(side: MindConnectSide, client_id: str) -> bool:
    return client_id in side.store.agents() or client_id in side.tenant.issued().values()


def agents_view(side: MindConnectSide) -> dict[str, Any]:
    """The tenant and every agent (issued or seen), for ``GET /api/mindconnect``."""
    summary = side.summary()
    seen = set(side.store.agents())
    issued = sorted(set(side.tenant.issued().values()) - seen)
    summary["agents"] += [side.store.view(client_id) for client_id in issued]
    summary["agents"].sort(key=lambda agent: agent["clientId"])
    return summary


async def _summary(request: web.Request) -> web.Response:
    return web.json_response(agents_view(request.app[_SIDE_KEY]))


async def _agent(request: web.Request) -> web.Response:
    side = request.app[_SIDE_KEY]
    client_id = request.match_info["client_id"]
    if not _CLIENT_ID.fullmatch(client_id) or not _known(side, client_id):
        return _error(404, "no such agent in this dev cloud")
    return web.json_response(side.store.view(client_id))


async def _command(request: web.Request) -> web.Response:
    side = request.app[_SIDE_KEY]
    client_id = request.match_info["client_id"]
    if not _CLIENT_ID.fullmatch(client_id) or not _known(side, client_id):
        # A typo would publish to a topic no agent reads: only known agents get commands.
        return _error(404, "no such agent in this dev cloud")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "The payload exceeds the maximum size allowed")
    try:
        body = loads_bounded(raw, max_nesting=MAX_NESTING + 1, max_bytes=_MAX_BODY)
    except ShadowRequestError as exc:
        return _error(exc.code, exc.message)
    payload = body.get("payload") if isinstance(body, dict) else None
    job_id = body.get("jobId") if isinstance(body, dict) else None
    if not isinstance(payload, dict):
        return _error(400, "'payload' must be an object")
    if job_id is not None and (not isinstance(job_id, str) or not 0 < len(job_id) <= 128):
        return _error(400, "'jobId' must be a string of 1-128 characters")
    try:
        sent = await side.send_command(client_id, payload, job_id=job_id)
    except MindConnectRequestError as exc:
        return _error(400, str(exc))
    except MindConnectError as exc:
        return _error(503, str(exc))
    return web.json_response(sent.as_json(), status=202)


async def _register_ca(request: web.Request) -> web.Response:
    side = request.app[_SIDE_KEY]
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "The payload exceeds the maximum size allowed")
    try:
        body = loads_bounded(raw, max_nesting=2, max_bytes=_MAX_BODY)
    except ShadowRequestError as exc:
        return _error(exc.code, exc.message)
    # The dev cloud's own route (Siemens' CA upload API is not faked): its own field names.
    ca = body.get("ca") if isinstance(body, dict) else None
    verification = body.get("verification") if isinstance(body, dict) else None
    if not isinstance(ca, str) or not isinstance(verification, str):
        return _error(400, "'ca' and 'verification' must be PEM strings")
    try:
        path = await side.register_own_ca(ca.encode(), verification.encode())
    except MindConnectRequestError as exc:
        return _error(400, str(exc))
    except (MindConnectError, TimeoutError) as exc:
        return _error(503, str(exc) or "the broker did not come back in time")
    own = [str(p) for p in side.tenant.own_cas()]
    return web.json_response({"ownCas": own, "added": str(path)})


def add_dashboard_routes(app: web.Application, side: MindConnectSide) -> None:
    """Add the MindConnect routes to the dashboard application."""
    app[_SIDE_KEY] = side
    app.router.add_get("/api/mindconnect", _summary)
    app.router.add_get("/api/mindconnect/agents/{client_id}", _agent)
    app.router.add_post("/api/mindconnect/agents/{client_id}/commands", _command)
    app.router.add_post("/api/mindconnect/cas", _register_ca)
