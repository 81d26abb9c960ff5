"""Filter ``read_body``: take the request body in hand before anything is decided.

Contract: attaches a ``RequestBody`` to ``ctx.body`` (``proxy.http.body``). A body declared larger than
``forwarding.max_request_body`` gets 413 at once, before a byte is read or forwarded (and before any
``100 Continue``); an expectation other than ``100-continue`` gets 417. A small body
(``forwarding.replay_buffer``) is read into memory so a later filter may replay it, within the
``clients`` body deadlines (408 when the tool stalls); a larger one stays a stream that ``forward``
sends exactly once. Refusals carry ``Connection: close``: the rest of the body is not wanted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from proxy.context import Context, Reply
from proxy.errors import exact_error
from proxy.http.body import BodyStalled, BodyTooLarge, ExpectationFailed, RequestBody, refusal

if TYPE_CHECKING:
    from proxy.services import Services


class ReadBody:
    name = "read_body"

    def __init__(self, services: Services) -> None:
        self.services = services

    def before(self, ctx: Context) -> Awaitable[Reply | None] | None:
        policy = ctx.policy
        fwd = policy.forwarding
        body = ctx.body = RequestBody(ctx.request, fwd.max_request_body, fwd.replay_buffer, policy.clients)
        if body.absent():  # the common GET: nothing to read, nothing to wait for
            return None
        return self._read(ctx, body)

    async def _read(self, ctx: Context, body: RequestBody) -> Reply | None:
        try:
            await body.prepare()
        except (BodyTooLarge, BodyStalled, ExpectationFailed) as exc:
            decision, reply = refusal(exc)
            ctx.decide(decision)
            ctx.bytes_in = body.size
            return reply
        except asyncio.IncompleteReadError:
            ctx.decide("client sent a short body")
            return exact_error(400, "the request body ended before its Content-Length")
        ctx.bytes_in = body.size
        return None
