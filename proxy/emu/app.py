"""The emulator's aiohttp application and its gate for REST calls.

Contract
- ``create_app(config=None, clock=None)`` -> ``web.Application`` with ``app[EMULATOR]`` the state.
- Every ``/api/v1/…`` call: faults first; then the bearer token (unknown -> 401 ``unauthorized``, expired ->
  401 ``token_expired``, both with ``Reason: Unauthorized``); calls without a division (``current/Me``) are not
  limited; calls with one pass the error limit (blocked -> configured answer, ``error_block``), then the
  minute/day windows (429 empty, only the hit limit's headers), then the handler; its response gets the six
  ``X-RateLimit-*`` headers and its 400/401/403/404 count toward the error limit.
- ``GET /_emulator/stats``, ``POST /_emulator/reset``; OAuth and XML routes from their modules.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from proxy.clock import SystemClock

from . import oauth, rest, system, xmlapi
from .config import EmulatorConfig
from .entities import ENDPOINTS
from .errors import rest_error
from .faults_http import apply_fault
from .gate import bearer, limited
from .state import EMULATOR, Emulator

_KEY = re.compile(r"^(.*?)\((.*)\)$")
_GUID_KEY = re.compile(r"^(?:guid)?'([^']*)'$", re.IGNORECASE)


def parse_tail(tail: str) -> tuple[str, int | None, str, str | None, bool]:
    """``123/crm/Accounts(guid'x')`` -> (entity path, division, endpoint key, key, count_only)."""
    div_s, _, rest_path = tail.partition("/")
    count_only = rest_path.lower().endswith("/$count")
    if count_only:
        rest_path = rest_path[:-7]
    key = None
    m = _KEY.match(rest_path)
    if m:
        rest_path, raw = m.group(1), m.group(2)
        km = _GUID_KEY.match(raw)
        key = km.group(1) if km else raw
    division = int(div_s) if div_s.isdigit() else None
    endpoint = rest_path.lower()
    if division is None:
        endpoint = f"{div_s.lower()}/{endpoint}"
    return rest_path, division, endpoint, key, count_only


def refused(emu: Emulator, user: str | None, division: int | None) -> tuple[int, str, str] | None:
    """A configured refusal: 401 for a refused user, 403 for a refused division, with Exact's Reason."""
    if emu.config.user_reasons and user in emu.config.user_reasons:
        return 401, emu.config.user_reasons[user], "user_refused"
    if emu.config.division_reasons and division in emu.config.division_reasons:
        return 403, emu.config.division_reasons[division], "division_refused"
    return None


async def api(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    emu.stats_.requests += 1
    if emu.faults.rules:
        faulted = await apply_fault(emu, request)
        if faulted is not None:
            return faulted
    now = emu.clock.time()
    _, division, endpoint, key, count_only = parse_tail(request.match_info["tail"])
    client, _user, problem = bearer(emu, request, now)
    if problem is not None:
        outcome = "unauthorized" if problem == "unknown" else "token_expired"
        resp = rest_error(
            401,
            "Access denied: the access token is missing, invalid or expired.",
            reason="Unauthorized",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
        if client is not None:
            emu.errors.record(client, division, endpoint, 401, now)
        emu.stats_.record(request.method, request.path, client, division, endpoint, 401, outcome, now)
        return resp
    assert client is not None
    refusal = refused(emu, _user, division)
    if refusal is not None:
        status, reason, outcome = refusal
        emu.errors.record(client, division, endpoint, status, now)
        emu.stats_.record(request.method, request.path, client, division, endpoint, status, outcome, now)
        return rest_error(status, f"Access denied: {reason}.", reason=reason)
    if division is None:
        if endpoint == "current/me" and request.method == "GET":
            resp, outcome = system.me(emu, request, client, _user or emu.config.user)
        else:
            resp, outcome = rest_error(404, "Not found."), "not_found"
        emu.stats_.record(request.method, request.path, client, None, endpoint, resp.status, outcome, now)
        return resp

    async def call() -> tuple[web.StreamResponse, str]:
        return await dispatch(emu, request, division, endpoint, key, count_only)

    return await limited(emu, request, client, division, endpoint, now, call)


async def dispatch(
    emu: Emulator, request: web.Request, division: int, endpoint: str, key: str | None, count_only: bool
) -> tuple[web.StreamResponse, str]:
    ep = ENDPOINTS.get(endpoint)
    method = request.method
    if ep is None:
        if endpoint in ("system/divisions", "system/alldivisions") and method == "GET":
            return system.divisions(emu, request, division)
        return rest_error(404, f"Endpoint not found: {endpoint}."), "not_found"
    if method == "GET":
        if key is not None:
            return rest.get_one(emu, request, division, ep, key)
        return rest.get_collection(emu, request, division, endpoint, ep, count_only)
    if rest.writable(emu, ep):
        if method == "POST" and key is None:
            return await rest.post(emu, request, division, ep)
        if method == "PUT" and key is not None:
            return await rest.put(emu, request, division, ep, key)
        if method == "DELETE" and key is not None:
            return rest.delete(emu, request, division, ep, key)
    return rest_error(405, f"Method {method} is not allowed on {endpoint}."), "method_not_allowed"


async def stats_handler(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(request.app[EMULATOR].stats()), content_type="application/json")


async def reset_handler(request: web.Request) -> web.Response:
    request.app[EMULATOR].reset()
    return web.Response(status=204)


def create_app(config: EmulatorConfig | None = None, clock=None) -> web.Application:
    app = web.Application(client_max_size=40 * 1024 * 1024)
    emu = Emulator(config or EmulatorConfig(), clock or SystemClock())
    app[EMULATOR] = emu
    app.router.add_get("/_emulator/stats", stats_handler)
    app.router.add_post("/_emulator/reset", reset_handler)
    app.router.add_get("/api/oauth2/auth", oauth.auth)
    app.router.add_post("/api/oauth2/token", oauth.token)
    app.router.add_get("/docs/XMLDownload.aspx", xmlapi.download)
    app.router.add_get("/docs/xmldownload.aspx", xmlapi.download)
    app.router.add_post("/docs/XMLUpload.aspx", xmlapi.upload)
    app.router.add_post("/docs/xmlupload.aspx", xmlapi.upload)
    app.router.add_route("*", "/api/v1/{tail:.+}", api)

    async def close(_app: web.Application) -> None:
        emu.close()

    app.on_cleanup.append(close)
    return app
