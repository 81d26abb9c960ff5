"""Admin endpoints under the reserved prefix ``/_proxy/`` (Exact has no such path, so nothing collides).

Contract
- ``/_proxy/health``: 200 ``{"status":"ok",…}`` while the proxy serves (the Docker HEALTHCHECK), or 503
  ``{"status":"degraded",…}`` naming the reason (the state store cannot write: its ``problem``, such
  as a full disk or a state file deleted under the running proxy).
- In cluster mode health is 503 while the shared server is unreachable (fail closed: a balancer drains
  the node), and the status carries ``cluster``: the shared view read from the server (live nodes,
  shared windows, error counts, chains).
- ``/_proxy/status``: a JSON snapshot: policy, listeners, state store, counts of what was answered
  locally, and the ``snapshot()`` of every filter and service that has one (windows, queues, pauses,
  error counts, token chains). ``exact-proxy status`` renders it.
- ``/_proxy/usage``: where the budget went (``proxy.ops.usage``): the usage of one UTC day
  (``?day=YYYY-MM-DD``, default today) grouped by ``?by=tool|division|endpoint|app`` (default: every
  key), with its totals and advice; 400 for a day or grouping it does not know. In cluster mode it is
  this node's usage. The status carries today's advice under ``advice``.
- ``/_proxy/`` (and ``/_proxy``, redirected): the dashboard, one page with its CSS and script
  (``proxy/ops/dashboard/``, served from the package: no external asset, works offline) under a strict
  Content-Security-Policy (its own script and style only, no inline code, no frames). It reads
  ``/_proxy/glance`` (``proxy.ops.glance``: the status at a glance, with today's calls by tool and the
  recent non-routine decisions) and then follows ``/_proxy/events`` (``proxy.ops.events``: the same as
  Server-Sent Events, once a second while a page is open).
- ``/_proxy/metrics`` (and ``/metrics``, which Exact has no path for either): Prometheus text.
- Answered only to loopback clients whose ``Host`` names this machine (``proxy.ops.admin_access``: no DNS
  rebinding) unless the policy's ``admin.allow_remote`` says otherwise; anyone else gets 403.
  Nothing here ever shows a token, code or secret: snapshots carry counts, times and ids.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.filters.types import Snapshots
from proxy.ops import admin_access, glance, usage

if TYPE_CHECKING:
    from proxy.services import Services

log = logging.getLogger("exact_proxy.admin")

PREFIXES = ("/_proxy/", "/metrics")


PAGE_FILES = {"/_proxy/": ("index.html", "text/html; charset=utf-8"),
              "/_proxy/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
              "/_proxy/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8")}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache"}
_page_cache: dict[str, bytes] = {}


def is_admin_path(path: str) -> bool:
    return (path.startswith("/_proxy/") or path in ("/_proxy", "/metrics") or path.startswith("/metrics?")
            or path.startswith("/_proxy?"))


def page_file(name: str) -> bytes:
    """A file of the dashboard, read from the package once."""
    body = _page_cache.get(name)
    if body is None:
        from importlib import resources

        body = _page_cache[name] = resources.files("proxy.ops").joinpath("dashboard", name).read_bytes()
    return body


async def full_status(services: Services) -> dict[str, Any]:
    """The status, with the shared view read from the server in cluster mode."""
    body = status(services)
    if services.cluster is not None:
        body["cluster"] = await services.cluster.view()
    return body


async def glance_now(services: Services) -> dict[str, Any]:
    return glance.glance(await full_status(services), services.usage.report(None, "tool"),
                         services.recent.rows(), services.policy.error_budget.budget)


def _store(services: Services) -> dict[str, Any]:
    store = services.store
    if store is None:
        return {"kind": "none", "healthy": True}
    return {"kind": store.describe(), "healthy": bool(store.healthy)}


def health(services: Services) -> tuple[int, dict[str, Any]]:
    policy = services.policy
    store = _store(services)
    body = {
        "status": "ok" if store["healthy"] else "degraded",
        "uptime_s": round(time.time() - services.started_at, 1),
        "policy": policy.source,
        "policy_reloads": services.holder.reloads,
        "policy_refusals": services.holder.refusals,
        "state": store,
    }
    ok = bool(store["healthy"])
    if not store["healthy"]:
        cause = services.store.problem if services.store is not None else None
        body["reason"] = (f"{cause}; " if cause else "") + ("the state store cannot write; counters are kept "
                                                             "in memory only")
    if services.cluster is not None:
        up, why = services.cluster.healthy()
        body["cluster"] = {"node": services.cluster.name, "reachable": up}
        if not up:
            ok = False
            body["status"] = "degraded"
            body["reason"] = f"{why}: calls that count against Exact's limits are refused (fail closed)"
    return (200 if ok else 503), body


def status(services: Services) -> dict[str, Any]:
    policy = services.policy
    out: dict[str, Any] = {
        "now": services.clock.time(),
        "policy": policy.source,
        "uptime_s": round(time.time() - services.started_at, 1),
        "listeners": [{"name": lst.name, "host": lst.host, "port": lst.port, "upstream": lst.upstream}
                      for lst in policy.listeners],
        "upstreams": {n: u.base_url for n, u in policy.upstreams.items()},
        "state": _store(services),
        "totals": dict(services.metrics.totals),
        "answered_locally": _local_counts(services),
        "token_chains": services.tokens.snapshot(),
        "advice": services.usage.advice(),
    }
    for f in services.filters:
        if isinstance(f, Snapshots):
            try:
                out[f.name] = f.snapshot()
            except Exception:  # a broken snapshot must not break the status page
                log.exception("snapshot of %s failed", f.name)
                out[f.name] = {"error": "snapshot failed; see the proxy log"}
    return out


def _local_counts(services: Services) -> dict[str, int]:
    return services.metrics.local_counts()


async def dispatch(request: web.BaseRequest, services: Services) -> web.StreamResponse:
    refused = admin_access.refusal(request, services.policy)
    if refused is not None:
        return web.json_response({"error": refused}, status=403)
    if request.method not in ("GET", "HEAD"):
        return web.json_response({"error": "admin endpoints answer GET only"}, status=405,
                                 headers={"Allow": "GET, HEAD"})
    path = request.path
    if path == "/_proxy":
        return web.Response(status=301, headers={"Location": "/_proxy/"})
    if path in PAGE_FILES:
        name, content_type = PAGE_FILES[path]
        return web.Response(body=page_file(name), headers={"Content-Type": content_type, **PAGE_HEADERS})
    if path == "/_proxy/glance":
        return web.json_response(await glance_now(services), headers={"Cache-Control": "no-store"})
    if path == "/_proxy/events":
        return await services.events.stream(request, lambda: glance_now(services))
    if path in ("/_proxy/metrics", "/metrics"):
        return web.Response(body=services.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
    if path == "/_proxy/health":
        code, body = health(services)
        return web.json_response(body, status=code)
    if path == "/_proxy/usage":
        return _usage(request, services)
    if path == "/_proxy/status":
        return web.json_response(await full_status(services))
    return web.json_response({"error": f"no admin endpoint {path}",
                              "endpoints": ["/_proxy/", "/_proxy/health", "/_proxy/status", "/_proxy/glance",
                                            "/_proxy/events", "/_proxy/usage", "/_proxy/metrics"]},
                             status=404)


def _usage(request: web.BaseRequest, services: Services) -> web.Response:
    day, by = request.query.get("day") or None, request.query.get("by") or None
    if day is not None and not usage.valid_day(day):
        return web.json_response({"error": f"day must be a date like 2026-11-25, got {day[:40]!r}"}, status=400)
    if by is not None and by not in usage.BY:
        return web.json_response({"error": f"by must be one of {', '.join(usage.BY)}, got {by[:40]!r}"},
                                 status=400)
    return web.json_response(services.usage.report(day, by))
