"""The shared gate of calls with a division (REST and XML): token check helper, error limit, windows.

Contract
- ``bearer(emu, request, now) -> (client_id, user, problem)``; problem ``None``, ``"unknown"``, ``"expired"``.
- ``await limited(emu, request, client, division, endpoint, now, call)``: a blocked (app, division, endpoint)
  gets the configured block answer (``error_block``, no rate-limit headers); past a window the call gets an
  empty 429 with only the hit limit's headers (``minutely_429``/``daily_429``, ``Retry-After`` when configured);
  otherwise ``call()`` runs, its response gets the six headers and its status feeds the error limit. Every
  outcome is recorded in the statistics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .state import Emulator

Call = Callable[[], Awaitable[tuple[web.StreamResponse, str]]]


def bearer(emu: Emulator, request: web.Request, now: float) -> tuple[str | None, str | None, str | None]:
    h = request.headers.get("Authorization")
    if not h or h[:7].lower() != "bearer ":
        return None, None, "unknown"
    return emu.tokens.check_access(h[7:].strip(), now)


async def limited(
    emu: Emulator, request: web.Request, client: str, division: int, endpoint: str, now: float, call: Call
) -> web.StreamResponse:
    """The error limit, then the call windows, then the handler: the shared path of REST and XML calls."""
    if emu.errors.blocked(client, division, endpoint, now):
        resp: web.StreamResponse = web.Response(
            status=emu.config.error_block_status, text=emu.config.error_block_body
        )
        outcome = "error_block"
    else:
        outcome, headers = emu.windows.take(client, division, now)
        if outcome != "ok":
            if emu.config.retry_after_on_429:
                headers["Retry-After"] = str(emu.windows.retry_after(outcome, now))
            resp = web.Response(status=429, body=b"", headers=headers)
        else:
            resp, outcome = await call()
            resp.headers.update(headers)
            emu.errors.record(client, division, endpoint, resp.status, now)
    emu.stats_.record(request.method, request.path, client, division, endpoint, resp.status, outcome, now)
    return resp
