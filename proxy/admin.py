"""Admin endpoints under the reserved prefix ``/_proxy/`` (Exact has no such path, so nothing collides).

Contract: ``/_proxy/health`` answers 200 ``{"status":"ok",…}`` while the proxy serves; it is what the
Docker HEALTHCHECK calls. ``/_proxy/status`` gives a JSON snapshot. Neither ever shows a token or secret.
Later features add their part of the status here.
"""

from __future__ import annotations

import time

from aiohttp import web


def _health(services) -> dict:
    policy = services.policy
    return {
        "status": "ok",
        "uptime_s": round(time.time() - services.started_at, 1),
        "policy": policy.source,
        "policy_reloads": services.holder.reloads,
        "policy_refusals": services.holder.refusals,
    }


def _status(services) -> dict:
    policy = services.policy
    return {
        "policy": policy.source,
        "listeners": [{"name": lst.name, "host": lst.host, "port": lst.port, "upstream": lst.upstream}
                      for lst in policy.listeners],
        "upstreams": {n: u.base_url for n, u in policy.upstreams.items()},
    }


ROUTES = {"/_proxy/health": _health, "/_proxy/status": _status}


async def dispatch(request: web.BaseRequest, services) -> web.Response:
    view = ROUTES.get(request.path)
    if view is None:
        return web.json_response({"error": f"no admin endpoint {request.path}", "endpoints": sorted(ROUTES)},
                                 status=404)
    if request.method not in ("GET", "HEAD"):
        return web.json_response({"error": "admin endpoints answer GET only"}, status=405,
                                 headers={"Allow": "GET, HEAD"})
    return web.json_response(view(services))
