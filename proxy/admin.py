"""Admin endpoints under the reserved prefix ``/_proxy/`` (Exact has no such path, so nothing collides).

Contract: ``/_proxy/health`` answers 200 ``{"status":"ok",…}`` while the proxy serves; it is what the
Docker HEALTHCHECK calls. ``/_proxy/status`` gives a JSON snapshot. Neither ever shows a token or secret.
Later features add their part of the status here.
"""

from __future__ import annotations

import time

from aiohttp import web


def add_routes(app: web.Application, services) -> None:
    async def health(request: web.Request) -> web.Response:
        policy = services.policy
        return web.json_response({
            "status": "ok",
            "uptime_s": round(time.time() - services.started_at, 1),
            "policy": policy.source,
            "policy_reloads": services.holder.reloads,
            "policy_refusals": services.holder.refusals,
        })

    async def status(request: web.Request) -> web.Response:
        policy = services.policy
        return web.json_response({
            "policy": policy.source,
            "listeners": [{"name": lst.name, "host": lst.host, "port": lst.port, "upstream": lst.upstream}
                          for lst in policy.listeners],
            "upstreams": {n: u.base_url for n, u in policy.upstreams.items()},
        })

    app.router.add_get("/_proxy/health", health)
    app.router.add_get("/_proxy/status", status)
