"""The emulator as an aiohttp application: routing, and the state object tests and the demo steer.

Contract: ``create_app(config=None, clock=None) -> web.Application``; ``app[EMULATOR]`` is the
``Emulator``. For every call, in this order:
1. ``/_emulator/*`` (``control``) answers at once and counts nothing: ``GET /_emulator/stats``,
   ``POST /_emulator/reset``, ``POST /_emulator/revoke`` (``{"client_id"?, "user"?, "refresh"?}`` ->
   ``{"revoked": N}``) and ``POST /_emulator/unauthorized`` (``{"on": bool}``).
2. An injected fault for the path fires (``faults``); faulted calls never count toward the limits.
3. ``/api/oauth2/*`` (``oauth_http``), ``/api/v1/current/…`` (Me: the gate's token, phase and block
   steps for (app, None, ``current/me``), then no call limit), ``/api/v1/{division}/…`` (``gate`` then
   ``rest``), ``/docs/XML*.aspx`` (``xmlapi``); anything else 404.
The base URL written into links is ``public_base_url`` or the request's scheme and Host.

``Emulator`` is what tests and the demo steer: besides the statistics and limits,
``revoke(client_id=None, user=None, refresh=False) -> int`` withdraws access (every matching access
token issued so far answers 401 ``Reason: Unauthorized``, outcome ``token_revoked``; with ``refresh``
their refresh tokens get 400 invalid_grant), and ``set_unauthorized(on)`` starts or ends the phase in
which every API call answers 401 whatever its token (outcome ``unauthorized_phase``; the token endpoint
works as usual; ``reset()`` ends it). Client ids are taken in any spelling (``identity``).
"""

from __future__ import annotations

from aiohttp import web

from proxy.clock import SystemClock
from proxy.emulator import faults as faults_mod
from proxy.emulator import rest, system
from proxy.emulator.auth import authenticate
from proxy.emulator.config import EmulatorConfig
from proxy.emulator.control import serve_control
from proxy.emulator.data import ENTITIES, Dataset
from proxy.emulator.errorlimit import ErrorLimit
from proxy.emulator.errors import rest_error
from proxy.emulator.faults import Faults
from proxy.emulator.gate import counted, refuse
from proxy.emulator.identity import normal_client_id
from proxy.emulator.oauth import OAuth
from proxy.emulator.oauth_http import serve_oauth
from proxy.emulator.stats import Stats
from proxy.emulator.windows import CallLimits
from proxy.emulator.xmlapi import serve_xml


class Emulator:
    """The emulator's state: tokens, limits, the error limit, data, faults and statistics."""

    def __init__(self, config: EmulatorConfig, clock) -> None:
        self.config = config
        self.clock = clock
        self.oauth = OAuth(config, clock)
        self.limits = CallLimits(config, clock)
        self.errorlimit = ErrorLimit(config, clock)
        self.data = Dataset(config)
        self.faults = Faults(config.faults)
        self.counter = Stats(clock, config.request_log)
        self.mandatory = {e.lower() for e in config.mandatory_filter_endpoints}
        self.unauthorized_phase = False

    @property
    def requests(self) -> int:
        return self.counter.requests

    def stats(self) -> dict:
        snap = self.counter.snapshot()
        snap["blocks"] = self.errorlimit.active()
        snap["blocks_started"] = self.errorlimit.blocks_started
        return snap

    def count(self, outcome=None, app=None, division=None, endpoint=None) -> int:
        app = normal_client_id(app) if app is not None else None
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
        self.errorlimit.reset()

    def reset(self) -> None:
        """``POST /_emulator/reset``: limits, blocks, token-call counts and statistics start over;
        the unauthorized phase ends (revoked tokens stay revoked)."""
        self.reset_limits()
        self.oauth.reset_counts()
        self.counter.reset()
        self.unauthorized_phase = False

    def revoke(self, client_id: str | None = None, user: str | None = None, refresh: bool = False) -> int:
        """``POST /_emulator/revoke``: the number of access tokens revoked (see ``OAuth.revoke``)."""
        return self.oauth.revoke(client_id, user, refresh)

    def set_unauthorized(self, on: bool) -> None:
        """``POST /_emulator/unauthorized``: every API call answers 401 while on (see ``gate``)."""
        self.unauthorized_phase = bool(on)

    def set_faults(self, rules: list[dict]) -> None:
        self.faults.set(rules)

    def division_rows(self, division: int) -> list[dict]:
        return system.division_rows(self, division)


EMULATOR: web.AppKey[Emulator] = web.AppKey("emulator", Emulator)


async def handle(request: web.Request) -> web.StreamResponse:
    emu: Emulator = request.app[EMULATOR]
    emu.counter.requests += 1
    path = request.path
    low = path.lower()
    if low.startswith("/_emulator/"):
        return await serve_control(emu, request, low)
    if emu.faults.rules:
        rule = emu.faults.pick(request.method, path)
        if rule is not None and rule["kind"] == "late":  # done now, answered later (or to nobody)
            response = await _route(emu, request, path, low)
            await emu.clock.sleep(float(rule.get("delay", 5)))
            return response
        if rule is not None:
            answer = await faults_mod.answer(rule, request, emu.clock)
            if rule["kind"] != "slow":
                status = answer.status if answer is not None else 0
                emu.counter.record(request.method, path, None, None, None, status, f"fault_{rule['kind']}")
                return answer if answer is not None else web.Response(status=503)
    return await _route(emu, request, path, low)


async def _route(emu: Emulator, request: web.Request, path: str, low: str) -> web.StreamResponse:
    base = emu.config.public_base_url or f"{request.scheme}://{request.host}"
    if low.startswith("/api/v1/"):
        return await _api(emu, request, path, base)
    if low.startswith("/api/oauth2/"):
        return await serve_oauth(emu, request, low)
    if low.startswith("/docs/xml"):
        return await serve_xml(emu, request, low)
    emu.counter.record(request.method, path, None, None, None, 404, "not_found")
    return rest_error(404, "Not found")


def endpoint_of(rest_path: str) -> str:
    """The error-limit endpoint: the path after the division, key segment and ``$count`` removed, lower case."""
    parts = [p.split("(", 1)[0] for p in rest_path.split("/") if p and p != "$count"]
    return "/".join(parts).lower()


async def _api(emu: Emulator, request: web.Request, path: str, base: str) -> web.StreamResponse:
    parts = path.split("/", 4)  # ['', 'api', 'v1', '{division}', 'rest']
    app, user, failure = authenticate(emu, request)
    if parts[3].lower() == "current":
        refusal = refuse(emu, request, app, None, "current/me", failure)
        if refusal is not None:
            return refusal
        emu.counter.record(request.method, path, app, None, "current/me", 200, "ok")
        return system.me(emu, user or "anonymous", base, request.query.get("$select"))
    try:
        division = int(parts[3])
    except ValueError:
        emu.counter.record(request.method, path, app, None, None, 404, "not_found")
        return rest_error(404, f"Unknown division: {parts[3]}")
    rest_path = parts[4] if len(parts) > 4 else ""

    async def serve() -> rest.Answer:
        body = await request.read() if request.can_read_body else b""
        return rest.serve(emu, request, division, rest_path, base, request.query, request.rel_url.raw_query_string,
                          body)

    return await counted(emu, request, app, division, endpoint_of(rest_path), failure, serve)


def create_app(config: EmulatorConfig | None = None, clock=None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    emu = Emulator(config or EmulatorConfig(), clock or SystemClock())
    app[EMULATOR] = emu
    app.router.add_route("*", "/{tail:.*}", handle)

    async def close(_app) -> None:
        emu.counter.close()

    app.on_cleanup.append(close)
    return app
