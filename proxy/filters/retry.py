"""Filter ``retry``: transient faults are retried with exponential backoff and jitter, never a write.

Contract
- GET and HEAD are retried after 408, 503, 599 (``retry.statuses``), a connection that failed or was
  reset before an answer, and an empty 200 answer: up to ``retry.attempts`` more times, waiting
  ``base * 2**n`` seconds (capped at ``cap``) times a random factor between 0.5 and 1.
- Any method is retried when the connection failed before anything was sent (``failure == "connect"``):
  Exact cannot have seen it. A POST, PUT or DELETE that may have reached Exact is never sent again.
- Each attempt passes the call budget again (this filter sits outside it), so every retry is counted.
- Each retry is logged and recorded in ``decision``: ``retry 1/3 after 503 in 0.4 s``.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from proxy.context import Context, Next, Reply

if TYPE_CHECKING:
    from proxy.services import Services

log = logging.getLogger("exact_proxy.retry")

SAFE = frozenset(("GET", "HEAD"))


class Retry:
    name = "retry"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.random = random.Random()

    def _transient(self, ctx: Context, reply: Reply, statuses: frozenset[int]) -> str | None:
        failure = ctx.upstream_failure
        if failure == "connect":
            return "connection failure"
        if ctx.method not in SAFE:
            return None
        if failure == "reset":
            return "connection reset"
        if failure is not None or reply.local:
            return None
        if reply.status in statuses:
            return str(reply.status)
        if reply.status == 200 and reply.length == 0 and ctx.method == "GET":
            return "empty answer"
        return None

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        settings = ctx.policy.retry
        attempt = 0
        while True:
            reply = await call_next(ctx)
            why = self._transient(ctx, reply, settings.statuses)
            if why is None or attempt >= settings.attempts:
                if why is not None:
                    ctx.decide(f"gave up after {attempt} retries ({why})")
                return reply
            if ctx.body is not None and not ctx.body.replayable:
                ctx.decide(f"not retried ({why}): the body was streamed and cannot be sent again")
                return reply
            attempt += 1
            delay = min(settings.cap, settings.base * 2 ** (attempt - 1)) * self.random.uniform(0.5, 1.0)
            ctx.decide(f"retry {attempt}/{settings.attempts} after {why} in {delay:.1f} s")
            log.info("retrying %s %s (%s), attempt %d of %d in %.1f s", ctx.method, ctx.raw_path, why, attempt,
                     settings.attempts, delay)
            await reply.discard()
            ctx.upstream_failure = None
            ctx.answered_by = None  # the failed attempt's local answer is dropped: the retry answers
            await self.services.clock.sleep(delay)
