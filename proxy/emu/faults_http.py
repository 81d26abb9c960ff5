"""Applying an injected fault to a request.

Contract: ``await apply_fault(emu, request) -> Response | None``. ``None`` means serve normally (no rule
fired, or a ``slow`` rule that has waited its ``delay`` on the emulator's clock). Otherwise the faulted answer:
503/408 in Exact's error envelope, 599 and ``empty`` with an empty body, ``reset`` aborts the connection.
Faulted calls are recorded with outcome ``fault_<kind>`` and, unless ``faults_count_toward_limits``, take no
slot in the call windows.
"""

from __future__ import annotations

from aiohttp import web

from .errors import rest_error
from .gate import bearer


async def apply_fault(emu, request: web.Request) -> web.StreamResponse | None:
    rule = emu.faults.pick(request.method, request.path)
    if rule is None:
        return None
    if rule.kind == "slow":
        await emu.clock.sleep(rule.delay)
        return None
    now = emu.clock.time()
    app, division = None, None
    if request.path.lower().startswith("/api/v1/"):
        app, _, _ = bearer(emu, request, now)
        div = request.path[8:].split("/", 1)[0]
        division = int(div) if div.isdigit() else None
    if emu.config.faults_count_toward_limits and app is not None and division is not None:
        emu.windows.take(app, division, now)
    outcome = f"fault_{rule.kind}"
    if rule.kind == "reset":
        status = 0
        resp: web.StreamResponse = web.Response(status=200)
        if request.transport is not None:
            request.transport.abort()
    elif rule.kind == "503":
        status, resp = 503, rest_error(503, "Service Unavailable")
    elif rule.kind == "408":
        status, resp = 408, rest_error(408, "Request Timeout")
    elif rule.kind == "599":
        status, resp = 599, web.Response(status=599, body=b"")
    else:
        status, resp = rule.status, web.Response(status=rule.status, body=b"")
    emu.stats_.record(request.method, request.path, app, division, None, status, outcome, now)
    return resp
