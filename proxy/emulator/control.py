"""The emulator's own endpoints, ``/_emulator/*``: what tests, benchmarks and the demo steer it with.

Contract: ``await serve_control(emu, request, low_path) -> web.Response``; nothing here is counted in
the statistics or toward any limit. Answers are JSON:
- ``GET /_emulator/stats``: ``Emulator.stats()``.
- ``POST /_emulator/reset``: ``Emulator.reset()`` (limits, blocks, token-call counts, the 570-second
  clocks and statistics start over; the unauthorized phase ends) -> ``{"reset": true}``.
- ``POST /_emulator/revoke`` with an optional JSON object ``{"client_id": str|null, "user": str|null,
  "refresh": bool}``: ``Emulator.revoke(...)``, as when a user's access is withdrawn -> ``{"revoked": N}``.
- ``POST /_emulator/unauthorized`` with ``{"on": bool}``: ``Emulator.set_unauthorized(on)``
  -> ``{"unauthorized": bool}``.
A body that is not such an object gets 400 ``{"error": "<why>"}``; any other path 404.
"""

from __future__ import annotations

import json

from aiohttp import web


def _json(status: int, obj) -> web.Response:
    return web.Response(status=status, body=json.dumps(obj).encode(), content_type="application/json")


async def _body(request: web.Request) -> dict | str:
    """The JSON object of the body ({} when empty), or why it is not one."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "the body is not JSON"
    return body if isinstance(body, dict) else "the body must be a JSON object"


async def _revoke(emu, request: web.Request) -> web.Response:
    body = await _body(request)
    if isinstance(body, str):
        return _json(400, {"error": body})
    unknown = sorted(set(body) - {"client_id", "user", "refresh"})
    client_id, user, refresh = body.get("client_id"), body.get("user"), body.get("refresh", False)
    if unknown or not all(v is None or isinstance(v, str) for v in (client_id, user)) \
            or not isinstance(refresh, bool):
        return _json(400, {"error": 'expected {"client_id": str|null, "user": str|null, "refresh": bool}'})
    return _json(200, {"revoked": emu.revoke(client_id, user, refresh)})


async def _unauthorized(emu, request: web.Request) -> web.Response:
    body = await _body(request)
    if isinstance(body, str):
        return _json(400, {"error": body})
    if set(body) != {"on"} or not isinstance(body["on"], bool):
        return _json(400, {"error": 'expected {"on": true|false}'})
    emu.set_unauthorized(body["on"])
    return _json(200, {"unauthorized": body["on"]})


async def serve_control(emu, request: web.Request, low: str) -> web.Response:
    if low == "/_emulator/stats":
        return _json(200, emu.stats())
    if request.method == "POST":
        if low == "/_emulator/reset":
            emu.reset()
            return _json(200, {"reset": True})
        if low == "/_emulator/revoke":
            return await _revoke(emu, request)
        if low == "/_emulator/unauthorized":
            return await _unauthorized(emu, request)
    return _json(404, {"error": "no such emulator endpoint"})
