"""HTTP side of Exact's OAuth2: ``GET /api/oauth2/auth`` (auto-approve) and ``POST /api/oauth2/token``.

Contract
- ``auth``: known ``client_id`` and a ``redirect_uri`` -> 302 to ``redirect_uri?code=…&state=…``; ``user=`` in
  the query picks the user (default ``config.user``). Counted as endpoint ``oauth2/auth``.
- ``token``: form body, client credentials in the body or HTTP Basic; the rules live in ``tokens.Tokens``.
  Counted with endpoint ``oauth2/token``, app = client_id, division None. Token-endpoint errors count toward
  the error limit of (client, None, ``oauth2/token``); a blocked client gets the configured block answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import unquote, urlencode

from aiohttp import web

from .errors import oauth_error
from .faults_http import apply_fault
from .state import EMULATOR

TOKEN_ENDPOINT = "oauth2/token"


async def auth(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    emu.stats_.requests += 1
    now = emu.clock.time()
    q = request.query
    cid, redirect = q.get("client_id"), q.get("redirect_uri")
    if not cid or cid not in emu.config.clients or not redirect:
        emu.stats_.record("GET", request.path, cid, None, "oauth2/auth", 400, "invalid_client", now)
        return web.Response(status=400, text="Unknown client_id or missing redirect_uri.")
    if q.get("response_type", "code") != "code":
        emu.stats_.record("GET", request.path, cid, None, "oauth2/auth", 400, "bad_request", now)
        return web.Response(status=400, text="Only response_type=code is supported.")
    user = q.get("user") or emu.config.user
    code = emu.tokens.new_code(cid, user, redirect, now)
    params = {"code": code}
    if "state" in q:
        params["state"] = q["state"]
    sep = "&" if "?" in redirect else "?"
    emu.stats_.record("GET", request.path, cid, None, "oauth2/auth", 302, "ok", now)
    return web.Response(status=302, headers={"Location": redirect + sep + urlencode(params)})


def _basic(request: web.Request) -> tuple[str, str] | None:
    h = request.headers.get("Authorization", "")
    if h[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(h[6:].strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    cid, sep, secret = raw.partition(":")
    return (unquote(cid), unquote(secret)) if sep else None


async def token(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    emu.stats_.requests += 1
    if emu.faults.rules:
        faulted = await apply_fault(emu, request)
        if faulted is not None:
            return faulted
    now = emu.clock.time()
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    basic = _basic(request)
    claimed = form.get("client_id") or (basic[0] if basic else None)
    if claimed and emu.errors.blocked(claimed, None, TOKEN_ENDPOINT, now):
        emu.stats_.record(
            "POST",
            request.path,
            claimed,
            None,
            TOKEN_ENDPOINT,
            emu.config.error_block_status,
            "error_block",
            now,
        )
        return web.Response(status=emu.config.error_block_status, text=emu.config.error_block_body)
    result = emu.tokens.grant(form, basic, now)
    if result.status == 200:
        resp = web.Response(
            body=json.dumps(result.body, separators=(",", ":")).encode(),
            content_type="application/json",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )
    else:
        resp = oauth_error(
            result.status, result.body["error"], result.body.get("error_description"), result.headers
        )
    if result.client_id:
        emu.errors.record(result.client_id, None, TOKEN_ENDPOINT, result.status, now)
    emu.stats_.record(
        "POST", request.path, result.client_id, None, TOKEN_ENDPOINT, result.status, result.outcome, now
    )
    return resp
