"""The OAuth endpoints over HTTP: ``GET /api/oauth2/auth`` and ``POST /api/oauth2/token``.

Contract: ``await serve_oauth(emu, request, low_path)``.
- ``auth`` auto-approves for ``config.user`` (or ``&user=`` in the query) and redirects (302) to
  ``redirect_uri?code=…[&state=…]``; an unknown client or a missing redirect_uri gets 400.
- ``token`` reads the form (credentials in the body or HTTP Basic) and lets ``OAuth.token`` decide.
  Errors with a status in ``error_statuses`` count toward the error limit of (app, None, ``oauth2/token``)
  (a too-early refresh only when ``too_early_counts_as_error``); a blocked key gets the blocked answer.
  The app of those keys and of the statistics is the client id's normal form (``identity``), so every
  spelling of one app shares one error limit; ``/_emulator/unauthorized`` does not touch this endpoint.
Nothing here counts toward the call limits. Codes and tokens are never logged.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from proxy.emulator.auth import basic
from proxy.emulator.identity import normal_client_id

ENDPOINT = "oauth2/token"


def _json(status: int, obj, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(obj).encode(), content_type="application/json",
                        headers=headers)


async def serve_oauth(emu, request: web.Request, low: str) -> web.StreamResponse:
    if low == "/api/oauth2/auth":
        return _auth(emu, request)
    if low != "/api/oauth2/token" or request.method != "POST":
        emu.counter.record(request.method, request.path, None, None, None, 404, "not_found")
        return _json(404, {"error": "not_found", "error_description": "No such OAuth endpoint."})
    form = dict(parse_qsl((await request.read()).decode("utf-8", "replace"), keep_blank_values=True))
    creds = basic(request.headers.get("Authorization"))
    app_guess = form.get("client_id") or (creds[0] if creds else "")
    app_guess = normal_client_id(app_guess) if app_guess else "unknown"
    if emu.errorlimit.blocked((app_guess, None, ENDPOINT)):
        emu.counter.record("POST", request.path, app_guess, None, ENDPOINT, emu.config.error_block_status,
                           "error_block")
        return emu.errorlimit.answer()
    status, body, headers, outcome, app, _user = emu.oauth.token(form, creds)
    if status in emu.config.error_statuses and (outcome != "too_early" or emu.config.too_early_counts_as_error):
        emu.errorlimit.count((app, None, ENDPOINT))
    emu.counter.record("POST", request.path, app, None, ENDPOINT, status, outcome)
    if status == 200 or outcome != "token_daily_limit" or emu.config.token_daily_limit_body:
        return _json(status, body, {"Cache-Control": "no-store", **headers})
    return web.Response(status=status, body=b"", headers={"Cache-Control": "no-store", **headers})


def _auth(emu, request: web.Request) -> web.StreamResponse:
    q = request.query
    client_id, redirect = normal_client_id(q.get("client_id", "")), q.get("redirect_uri", "")
    if client_id not in emu.config.clients or not redirect or q.get("response_type", "code") != "code":
        emu.counter.record(request.method, request.path, client_id or None, None, "oauth2/auth", 400, "bad_request")
        return _json(400, {"error": "invalid_request",
                           "error_description": "Unknown client_id, no redirect_uri or response_type is not code."})
    code = emu.oauth.authorize(client_id, redirect, q.get("user") or emu.config.user)
    params = {"code": code, **({"state": q["state"]} if "state" in q else {})}
    emu.counter.record(request.method, request.path, client_id, None, "oauth2/auth", 302, "ok")
    sep = "&" if "?" in redirect else "?"
    return web.Response(status=302, headers={"Location": redirect + sep + urlencode(params)})
