"""The gate every call with a division passes, in Exact's order (REST and XML alike).

Contract: ``await counted(emu, request, app, division, endpoint, failure, serve)``:
1. an authentication failure (``failure = (outcome, response)``) is answered as is and counts as an
   error of (app, division, endpoint);
2. a blocked (app, division, endpoint) gets the configured blocked answer (not counted anywhere else);
3. a division outside ``divisions`` (when set) or below 1 gets 403 ``Reason: NoDivisionAccess``;
4. the call limits admit the call or answer 429 with an empty body and only the hit limit's headers;
5. ``await serve()`` returns a ``rest.Answer``; its status counts toward the error limit when it is in
   ``error_statuses``; the answer gets the six ``X-RateLimit-*`` headers.
Every outcome is recorded in the statistics.
"""

from __future__ import annotations

from aiohttp import web

from .errors import rest_error


async def counted(emu, request, app, division: int, endpoint: str, failure, serve) -> web.StreamResponse:
    key = (app, division, endpoint)
    method, path = request.method, request.path
    record = emu.counter.record
    if failure is not None:
        emu.errorlimit.count(key)
        record(method, path, app, division, endpoint, 401, failure[0])
        return failure[1]
    if emu.errorlimit.blocked(key):
        record(method, path, app, division, endpoint, emu.config.error_block_status, "error_block")
        return emu.errorlimit.answer()
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
