"""The emulator as an aiohttp application: one handler applying Exact's rules in Exact's order.

Contract: ``create_app(config, clock) -> web.Application``; ``app[EMULATOR]`` is the ``Emulator`` state
(tests read and steer it). For every call, in this order:
1. ``/_emulator/stats`` (GET) and ``/_emulator/reset`` (POST) answer at once; they count nothing.
2. An injected fault for the path fires (503, 408, 599, reset, empty; ``slow`` waits, then goes on).
   Faulted calls do not count toward the limits.
3. OAuth: ``/api/oauth2/auth`` and ``/api/oauth2/token`` (see ``oauth``). Token errors count toward
   the error limit of endpoint ``oauth2/token``.
4. API calls check the bearer token (401 with ``Reason``), then the error block of (app, division,
   endpoint), then the call limits (429, empty body, only the headers of the limit hit), then the
   request itself (``rest``, XML). Answers with a counted status (400, 401, 403, 404) count toward the
   error limit; more than ``error_limit`` in ``error_window`` blocks the endpoint for
   ``error_block_seconds``.
Every call is counted in ``stats`` with its outcome, and logged to the JSONL request log if configured.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections import deque
from urllib.parse import unquote, urlencode

from aiohttp import web

from ..clock import SystemClock
from . import rest
from .config import EmulatorConfig
from .data import ENTITIES, Dataset
from .faults import Faults
from .oauth import OAuth
from .stats import Stats
from .windows import CallLimits

EMULATOR: web.AppKey = web.AppKey("emulator", object)


class Emulator:
    def __init__(self, config: EmulatorConfig, clock) -> None:
        self.config = config
        self.clock = clock
        self.oauth = OAuth(config, clock)
        self.limits = CallLimits(config, clock)
        self.data = Dataset(config)
        self.faults = Faults(config.faults)
        self.counter = Stats(clock, config.request_log)
        self.mandatory = {e.lower() for e in config.mandatory_filter_endpoints}
        self.errors: dict[tuple, deque] = {}
        self.blocked: dict[tuple, float] = {}

    # -- the test and demo interface ---------------------------------------------------------------
    @property
    def requests(self) -> int:
        return self.counter.requests

    def stats(self) -> dict:
        snap = self.counter.snapshot()
        now = self.clock.time()
        snap["blocks"] = [{"app": k[0], "division": k[1], "endpoint": k[2], "until": until}
                          for k, until in self.blocked.items() if until > now]
        return snap

    def count(self, outcome=None, app=None, division=None, endpoint=None) -> int:
        return self.counter.count(outcome, app, division, endpoint)

    def issue_tokens(self, client_id: str = "test-app", user: str = "user-1") -> dict:
        return self.oauth.issue(client_id, user)

    def account_ids(self, division: int) -> list[str]:
        return [r["ID"] for r in self.data.rows(division, ENTITIES["crm/accounts"])]

    def deleted_account_id(self, division: int) -> str:
        return self.data.deleted(division)[0]["ID"]

    def set_limits(self, app: str, division: int, minutely: int | None = None, daily: int | None = None) -> None:
        self.limits.set_limits(app, division, minutely, daily)

    def reset_limits(self) -> None:
        self.limits.reset()
        self.errors.clear()
        self.blocked.clear()

    def set_faults(self, rules: list[dict]) -> None:
        self.faults.set(rules)

    def division_rows(self, division: int) -> list[dict]:
        divisions = self.config.divisions or [division]
        return [{"Code": d, "Description": f"Division {d}", "HID": d, "Customer": str(uuid.UUID(int=d)),
                 "Country": "NL", "Currency": "EUR", "Timestamp": 1000 + i} for i, d in enumerate(divisions)]

    # -- the error limit -------------------------------------------------------------------------------
    def is_blocked(self, key: tuple) -> bool:
        until = self.blocked.get(key)
        return until is not None and until > self.clock.time()

    def count_error(self, key: tuple) -> None:
        now = self.clock.time()
        q = self.errors.setdefault(key, deque())
        q.append(now)
        while q and q[0] <= now - self.config.error_window:
            q.popleft()
        if len(q) > self.config.error_limit:
            self.blocked[key] = now + self.config.error_block_seconds
            q.clear()

    def block_answer(self) -> web.Response:
        body = self.config.error_block_body.encode()
        return web.Response(status=self.config.error_block_status, body=body,
                            content_type="application/json" if body else None)


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        user, _, pw = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(user), unquote(pw)


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


async def _fault(emu: Emulator, request: web.Request, rule: dict):
    kind = rule["kind"]
    if kind == "slow":
        await emu.clock.sleep(float(rule.get("delay", 5)))
        return None
    if kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPServiceUnavailable()  # never reaches the client: the connection is gone
    if kind == "empty":
        return web.Response(status=200, body=b"")
    if kind == "599":
        return web.Response(status=599, reason="Unknown", body=b"")
    status = int(kind)
    return rest_json(status, {"error": {"code": "", "message": {"lang": "", "value":
                     "Service Unavailable" if status == 503 else "Request Timeout"}}})


def rest_json(status: int, obj, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(obj).encode(), content_type="application/json",
                        headers=headers)


async def handle(request: web.Request) -> web.StreamResponse:
    emu: Emulator = request.app[EMULATOR]
    emu.counter.requests += 1
    path = request.path
    low = path.lower()
    if low.startswith("/_emulator/"):
        if low == "/_emulator/stats":
            return rest_json(200, emu.stats())
        if low == "/_emulator/reset" and request.method == "POST":
            emu.reset_limits()
            emu.counter.reset()
            return rest_json(200, {"reset": True})
        return rest_json(404, {"error": "no such emulator endpoint"})
    rule = emu.faults.pick(request.method, path)
    if rule is not None:
        answer = await _fault(emu, request, rule)
        if answer is not None:
            emu.counter.record(request.method, path, None, None, None, answer.status, f"fault_{rule['kind']}")
            return answer
    base = emu.config.public_base_url or f"{request.scheme}://{request.host}"
    if low.startswith("/api/oauth2/"):
        return await _oauth(emu, request, low, base)
    if low.startswith("/api/v1/"):
        return await _api(emu, request, path, base)
    if low.startswith("/docs/xml"):
        return await _xml(emu, request, low)
    emu.counter.record(request.method, path, None, None, None, 404, "not_found")
    return rest_json(404, {"error": {"code": "", "message": {"lang": "", "value": "Not found"}}})


async def _oauth(emu: Emulator, request: web.Request, low: str, base: str) -> web.StreamResponse:
    if low == "/api/oauth2/auth":
        q = request.query
        client_id, redirect = q.get("client_id", ""), q.get("redirect_uri", "")
        if client_id not in emu.config.clients or not redirect:
            emu.counter.record("GET", request.path, client_id, None, "oauth2/auth", 400, "bad_request")
            return rest_json(400, {"error": "invalid_request", "error_description": "unknown client_id or no "
                                   "redirect_uri"})
        code = emu.oauth.authorize(client_id, redirect, q.get("user") or emu.config.user)
        params = {"code": code, **({"state": q["state"]} if "state" in q else {})}
        emu.counter.record("GET", request.path, client_id, None, "oauth2/auth", 302, "ok")
        sep = "&" if "?" in redirect else "?"
        raise web.HTTPFound(redirect + sep + urlencode(params))
    if low != "/api/oauth2/token" or request.method != "POST":
        return rest_json(404, {"error": "not_found"})
    form = rest.form(await request.read())
    basic = _basic(request.headers.get("Authorization"))
    app_guess = form.get("client_id") or (basic[0] if basic else "unknown")
    key = (app_guess, None, "oauth2/token")
    if emu.is_blocked(key):
        emu.counter.record("POST", request.path, app_guess, None, "oauth2/token", emu.config.error_block_status,
                           "error_block")
        return emu.block_answer()
    status, body, headers, outcome, app, _user = emu.oauth.token(form, basic)
    if status in emu.config.error_statuses and (outcome != "too_early" or emu.config.too_early_counts_as_error):
        emu.count_error((app, None, "oauth2/token"))
    emu.counter.record("POST", request.path, app, None, "oauth2/token", status, outcome)
    return rest_json(status, body, {"Cache-Control": "no-store", **headers})


def _endpoint(rest_path: str) -> str:
    parts = [p.split("(", 1)[0] for p in rest_path.split("/") if p and p != "$count"]
    return "/".join(parts).lower()


async def _authenticate(emu: Emulator, request: web.Request):
    """(app, user, failure response or None)."""
    token = _bearer(request.headers.get("Authorization"))
    if token is None:
        if not emu.config.require_auth:
            return "anonymous", None, None
        return "unknown", None, ("unauthorized", rest_json(401, _msg("Unauthorized"), {"Reason": "Unauthorized"}))
    app, user, problem = emu.oauth.check(token)
    if problem == "unknown":
        return "unknown", None, ("unauthorized", rest_json(401, _msg("Unauthorized"), {"Reason": "Unauthorized"}))
    if problem == "expired":
        return app, user, ("token_expired", rest_json(401, _msg("Access token expired"),
                                                       {"Reason": "Unauthorized: access token expired"}))
    return app, user, None


def _msg(text: str) -> dict:
    return {"error": {"code": "", "message": {"lang": "", "value": text}}}


async def _api(emu: Emulator, request: web.Request, path: str, base: str) -> web.StreamResponse:
    parts = path.split("/", 4)  # ['', 'api', 'v1', '{division}', 'rest']
    app, user, failure = await _authenticate(emu, request)
    if parts[3].lower() == "current":
        if failure is not None:
            emu.counter.record(request.method, path, app, None, "current/me", 401, failure[0])
            return failure[1]
        emu.counter.record(request.method, path, app, None, "current/me", 200, "ok")
        return _me(emu, request, user or "anonymous", base)
    try:
        division = int(parts[3])
    except ValueError:
        emu.counter.record(request.method, path, app, None, None, 404, "not_found")
        return rest_json(404, _msg(f"Unknown division: {parts[3]}"))
    rest_path = parts[4] if len(parts) > 4 else ""
    endpoint = _endpoint(rest_path)
    return await _counted(emu, request, app, division, endpoint, failure,
                          lambda: _rest(emu, request, division, rest_path, base))


async def _rest(emu, request, division, rest_path, base):
    body = await request.read() if request.can_read_body else b""
    return rest.serve(emu, request, division, rest_path, base, request.query, request.query_string, body)


async def _counted(emu: Emulator, request, app, division, endpoint, failure, serve) -> web.StreamResponse:
    key = (app, division, endpoint)
    method, path = request.method, request.path
    if failure is not None:
        emu.count_error(key)
        emu.counter.record(method, path, app, division, endpoint, 401, failure[0])
        return failure[1]
    if emu.is_blocked(key):
        emu.counter.record(method, path, app, division, endpoint, emu.config.error_block_status, "error_block")
        return emu.block_answer()
    if emu.config.divisions and division not in emu.config.divisions:
        emu.count_error(key)
        emu.counter.record(method, path, app, division, endpoint, 403, "no_division_access")
        return rest_json(403, _msg("No access to this division"), {"Reason": "NoDivisionAccess"})
    hit, headers = emu.limits.admit(app, division)
    if hit is not None:
        emu.counter.record(method, path, app, division, endpoint, 429, f"{hit}_429")
        return web.Response(status=429, body=b"", headers=headers)
    answer = await serve()
    if answer.status in emu.config.error_statuses:
        emu.count_error(key)
    emu.counter.record(method, path, app, division, endpoint, answer.status, answer.outcome)
    headers.update(answer.headers)
    resp = web.Response(status=answer.status, body=answer.body if answer.status != 204 else None, headers=headers)
    if answer.content_type and answer.status != 204:
        resp.content_type = answer.content_type
    return resp


def _me(emu: Emulator, request, user: str, base: str) -> web.Response:
    division = emu.config.divisions[0] if emu.config.divisions else 7095
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, "exact-emulator-user:" + user))
    row = {"__metadata": {"uri": f"{base}/api/v1/current/Me(guid'{uid}')", "type": "Exact.Web.Api.System.Me"},
           "UserID": uid, "UserName": user, "FullName": user.replace("-", " ").title(), "CurrentDivision": division,
           "DivisionCustomer": str(uuid.UUID(int=division)), "Email": f"{user}@example.com", "Language": "NL-NL"}
    sel = request.query.get("$select")
    if sel:
        row = {"__metadata": row["__metadata"], **{k: row[k] for k in sel.split(",") if k in row}}
    return rest_json(200, {"d": {"results": [row]}})


async def _xml(emu: Emulator, request: web.Request, low: str) -> web.StreamResponse:
    q = {k.lower(): v for k, v in request.query.items()}
    topic = q.get("topic", "")
    direction = "upload" if "xmlupload" in low else "download"
    try:
        division = int(q.get("_division_", ""))
    except ValueError:
        emu.counter.record(request.method, request.path, None, None, None, 400, "bad_request")
        return web.Response(status=400, text="_Division_ is required")
    app, _user, failure = await _authenticate(emu, request)
    endpoint = f"xml/{direction}/{topic.lower()}"

    async def serve():
        if direction == "upload":
            await request.read()
            body = (f'<?xml version="1.0" encoding="utf-8"?><eExact><Messages><Message type="2">'
                    f'<Topic code="{topic}" node="{topic.rstrip("s")}" /><Date>{math.floor(emu.clock.time())}</Date>'
                    "<Description>Created</Description></Message></Messages></eExact>")
            return rest.Answer(200, body.encode(), "application/xml", {}, "ok")
        entity = ENTITIES.get({"accounts": "crm/accounts", "items": "logistics/items"}.get(topic.lower(), ""))
        if entity is None:
            return rest.Answer(400, b"<eExact><Messages><Message type=\"0\"><Description>Unknown topic"
                               b"</Description></Message></Messages></eExact>", "application/xml", {}, "bad_request")
        rows = Dataset.rows(emu.data, division, entity)[:100]
        inner = "".join(f'<{entity.model} ID="{{{r["ID"]}}}"><Name>{r.get("Name", r.get("Description", ""))}</Name>'
                        f"</{entity.model}>" for r in rows)
        body = f'<?xml version="1.0" encoding="utf-8"?><eExact><{topic}>{inner}</{topic}></eExact>'
        return rest.Answer(200, body.encode(), "application/xml", {}, "ok")

    return await _counted(emu, request, app, division, endpoint, failure, serve)


def create_app(config: EmulatorConfig | None = None, clock=None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    emu = Emulator(config or EmulatorConfig(), clock or SystemClock())
    app[EMULATOR] = emu
    app.router.add_route("*", "/{tail:.*}", handle)

    async def close(_app) -> None:
        emu.counter.close()

    app.on_cleanup.append(close)
    return app
