"""Filter ``read_body``: take the request body in hand before anything is decided.

Contract: attaches a ``RequestBody`` to ``ctx.body`` (``proxy.body``). A body declared larger than
``forwarding.max_request_body`` gets 413 at once, before a byte is forwarded. A small body
(``forwarding.replay_buffer``) is read into memory so a later filter may replay it; a larger one stays a
stream that ``forward`` sends exactly once.
"""

from __future__ import annotations

import asyncio

from ..body import BodyTooLarge, RequestBody
from ..errors import exact_error


class ReadBody:
    name = "read_body"

    def __init__(self, services) -> None:
        self.services = services

    def before(self, ctx):
        fwd = ctx.policy.forwarding
        ctx.body = RequestBody(ctx.request, fwd.max_request_body, fwd.replay_buffer)
        if ctx.body.absent():  # the common GET: nothing to read, nothing to wait for
            return None
        return self._read(ctx)

    async def _read(self, ctx):
        try:
            await ctx.body.prepare()
        except BodyTooLarge as exc:
            ctx.decide("refused (body too large)")
            return exact_error(413, f"request body is larger than max_request_body ({exc.limit} bytes); "
                               "Exact refuses such bodies too")
        except asyncio.IncompleteReadError:
            ctx.decide("client sent a short body")
            return exact_error(400, "the request body ended before its Content-Length")
        ctx.bytes_in = ctx.body.size
        return None
