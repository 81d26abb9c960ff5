"""The gate every API call passes, in Exact's order (REST, bulk, sync and XML; ``current/…`` steps 0-2).

Contract: ``refuse(emu, request, app, division, endpoint, failure) -> web.Response | None`` is steps
0-2, for calls with a division and without (``current/Me``: division None); None lets the call on.
``await counted(emu, request, app, division, endpoint, failure, serve)`` is all of them:
0. while the unauthorized phase is on (``/_emulator/unauthorized``), a blocked (app, division,
   endpoint) gets the blocked answer and any other call 401 ``Reason: Unauthorized`` whatever its token
   (outcome ``unauthorized_phase``), counted as an error of (app, division, endpoint);
1. an authentication failure (``failure = (outcome, response)``) is answered as is and counts as an
   error of (app, division, endpoint);
2. a blocked (app, division, endpoint) gets the configured blocked answer (outcome ``error_block``,
   not counted anywhere else);
3. a division outside ``divisions`` (when set) or below 1 gets 403 ``Reason: NoDivisionAccess``;
4. the call limits admit the call or answer 429 with an empty body and only the hit limit's headers;
5. ``await serve()`` returns a ``rest.Answer``; its status counts toward the error limit when it is in
   ``error_statuses``; the answer gets the six ``X-RateLimit-*`` headers.
Every outcome is recorded in the statistics.
"""

from __future__ import annotations

from aiohttp import web

from proxy.emulator.auth import unauthorized
from proxy.emulator.errors import rest_error


def refuse(emu, request, app, division: int | None, endpoint: str, failure) -> web.Response | None:
    key = (app, division, endpoint)
    if emu.unauthorized_phase:  # a blocked key is answered by step 2 below, whatever its token
        failure = None if emu.errorlimit.blocked(key) else ("unauthorized_phase", unauthorized())
    if failure is not None:
        emu.errorlimit.count(key)
        emu.counter.record(request.method, request.path, app, division, endpoint, 401, failure[0])
        return failure[1]
    if emu.errorlimit.blocked(key):
        emu.counter.record(request.method, request.path, app, division, endpoint,
                           emu.config.error_block_status, "error_block")
        return emu.errorlimit.answer()
    return None


async def counted(emu, request, app, division: int, endpoint: str, failure, serve) -> web.StreamResponse:
    key = (app, division, endpoint)
    method, path = request.method, request.path
    record = emu.counter.record
    refusal = refuse(emu, request, app, division, endpoint, failure)
    if refusal is not None:
        return refusal
    if division < 1 or (emu.config.divisions and division not in emu.config.divisions):
        emu.errorlimit.count(key)
        record(method, path, app, division, endpoint, 403, "no_division_access")
        return rest_error(403, "You have no access to this division.", {"Reason": "NoDivisionAccess"})
    hit, headers = emu.limits.admit(app, division)
    if hit is not None:
        record(method, path, app, division, endpoint, 429, f"{hit}_429")
        return web.Response(status=429, body=b"", headers=headers)
    answer = await serve()
    status = answer.status
    if status in emu.config.error_statuses:
        emu.errorlimit.count(key)
    record(method, path, app, division, endpoint, status, answer.outcome)
    if answer.headers:
        headers.update(answer.headers)
    if status == 204:
        return web.Response(status=204, headers=headers)
    if answer.content_type:
        headers["Content-Type"] = answer.content_type + ("; charset=utf-8" if answer.content_type != "text/plain"
                                                         else "")
    return web.Response(status=status, body=answer.body, headers=headers)
