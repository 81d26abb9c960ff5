"""Filter ``call_budget``: never send Exact more calls than its minute and day windows allow.

Contract, for requests with a division (``current/Me`` and token calls pass untouched):
- A call is reserved in its app and division's windows before it is forwarded; when there is no room,
  the request waits in the division's FIFO (priority rules go first) for at most ``limits.max_wait``,
  or the ``max_wait`` of the first ``limits.tools`` rule that matches it, and never longer than its
  tool was seen to wait before it gave up (``proxy.limits.patience``, learned from abandoned calls).
- A request that cannot be served in time, or whose daily budget is spent, gets a local 429 at once
  with ``Retry-After`` and the matching ``X-RateLimit-*`` headers (reset in epoch ms), in Exact's error
  envelope naming the cause. Never a 401.
- Every upstream answer teaches the division Exact's figures. An upstream 429 pauses the division and
  the request is replayed (Exact did not process it) while its deadline allows and its body can be sent
  again; otherwise the 429 goes to the tool.
- A tool that disconnects while queued leaves the queue and consumes nothing.
- Cluster mode (``services.cluster``): the windows and the queue are the cluster's, on the shared
  server (``proxy.cluster.windows``), one atomic reservation per call; when the server cannot be
  reached the call gets the cluster's 503 with ``Retry-After`` and nothing is forwarded. On a single
  node the windows are this process's own, kept in the store.
- Decisions: ``queued N ms``, ``refused (daily budget) reset T``, ``refused (max_wait …)``,
  ``upstream 429: paused until T, replayed``, ``exact remaining M/D``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from proxy.clock import utc_text
from proxy.context import Context, Next, Reply
from proxy.errors import exact_error
from proxy.exact.classify import LIMITED_KINDS, Classification
from proxy.limits.book import Book
from proxy.limits.division import Division, Refusal
from proxy.limits.patience import Patience, Tool
from proxy.limits.settings import LimitSettings

if TYPE_CHECKING:
    from proxy.cluster.windows import SharedWindows
    from proxy.ops.metrics import Row
    from proxy.services import Services
    from proxy.store.base import Store

log = logging.getLogger("exact_proxy.budget")


class CallBudget:
    name = "call_budget"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.shared: SharedWindows | None = None
        self.book = Book(services.clock)
        if services.cluster is not None:  # the windows are the cluster's, on the shared server
            from proxy.cluster.windows import SharedWindows

            self.shared = SharedWindows(services.cluster, services.clock, lambda: services.policy.limits)
            self.book = Book(services.clock, self.shared.division)
            services.cluster.views["windows"] = self.shared.view
        self.patience = Patience()

    async def load(self, store: Store) -> None:
        if self.shared is not None:
            return  # cluster mode: nothing of the windows lives in this node's store
        await self.book.load(store)
        self.book.restore_all(self.services.policy.limits)

    def close(self) -> None:
        self.book.close(self.services.policy.limits.lease)

    def snapshot(self) -> list[dict[str, Any]]:
        return self.book.snapshot()

    def metric_rows(self) -> Iterator[Row]:
        return self.book.metric_rows()

    @staticmethod
    def _tool(ctx: Context) -> Tool:
        return ctx.listener.name, ctx.request.headers.get("User-Agent", "")

    def _max_wait(self, ctx: Context, settings: LimitSettings) -> tuple[float, str]:
        """How long this call may wait: the first ``limits.tools`` rule that matches, else ``max_wait``;
        never longer than the tool was seen to wait before giving up."""
        wait, why = settings.max_wait, "max_wait"
        for rule in settings.tools:
            if rule.match.matches(ctx.listener.name, ctx.request.headers):
                wait, why = rule.max_wait, "the tool's max_wait"
                break
        if settings.learn_patience:
            learned = self.patience.limit(self._tool(ctx))
            if learned is not None and learned < wait:
                wait, why = learned, "the tool's patience, learned from the calls it abandoned"
        return wait, why

    def _rank(self, ctx: Context, settings: LimitSettings) -> int:
        for match in settings.priority:
            if match.matches(ctx.listener.name, ctx.request.headers):
                return 1
        return 0

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        settings = ctx.policy.limits
        cls = ctx.cls
        if not settings.enabled or cls is None or cls.division is None or cls.kind not in LIMITED_KINDS:
            return await call_next(ctx)
        div = self.book.division(cls.app, cls.division, settings)
        buckets = self.book.buckets_for(cls.app, cls.division, cls.endpoint, settings)
        arrived = self.services.clock.time()
        deadline = arrived + settings.max_wait
        rank = -1  # looked up when the call has to wait
        while True:
            if not div.acquire_now(buckets):
                if rank < 0:
                    rank = self._rank(ctx, settings)
                    max_wait, why = self._max_wait(ctx, settings)
                    deadline = arrived + max_wait
                    ctx.max_wait = (max_wait, why)
                try:
                    got = await div.acquire(rank, deadline, buckets)
                except asyncio.CancelledError:  # the tool gave up while its call waited
                    if settings.learn_patience:
                        self.patience.observe(self._tool(ctx), self.services.clock.time() - arrived)
                    raise
                if isinstance(got, Refusal):
                    return ctx.answer(self.name, self._refuse(ctx, cls, got, div))
                if got > 0:
                    ctx.queued_ms += got * 1000
                    ctx.decide(f"queued {got * 1000:.0f} ms")
            self.book.persist(div, settings.lease)
            attempts = ctx.attempt  # forward counts each call it makes
            try:
                reply = await call_next(ctx)
            except BaseException:  # cancelled (the tool went away) or a bug below: end the attempt
                div.unanswered(buckets, sent=ctx.attempt != attempts)
                raise
            if reply.local or ctx.upstream_failure is not None:
                # no answer from Exact: given back if nothing reached it (never forwarded, or the
                # connection failed); a probe without headers ends so the next call probes again
                div.unanswered(buckets, sent=ctx.attempt != attempts and ctx.upstream_failure != "connect")
                return reply
            if reply.status != 429:
                div.answered(reply.headers, settings.learn)
                if div.exact_minute_remaining is not None or div.exact_day_remaining is not None:
                    ctx.decide(f"exact remaining {_n(div.exact_minute_remaining)}/{_n(div.exact_day_remaining)}")
                self.book.persist(div, settings.lease)
                return reply
            until = div.upstream_429(reply.headers, settings.pause_base, settings.pause_cap)
            self.book.persist(div, settings.lease)
            log.warning("Exact answered 429 for app %s, division %s: paused until %s", cls.app, cls.division,
                        utc_text(until))
            replayable = ctx.body is None or ctx.body.replayable
            if until > deadline or not replayable:
                ctx.decide(f"upstream 429: paused until {utc_text(until)}; not replayed "
                           f"({'past max_wait' if replayable else 'body already streamed'})")
                return reply
            ctx.decide(f"upstream 429: paused until {utc_text(until)}, replayed")
            await reply.discard()

    def _refuse(self, ctx: Context, cls: Classification, refusal: Refusal, div: Division) -> Reply:
        if refusal.reason == "down" and self.services.cluster is not None:
            ctx.decide("refused (cluster state server unreachable)")
            return self.services.cluster.refused("this call")
        if refusal.reason == "daily":
            ctx.decide(f"refused (daily budget) reset {utc_text(refusal.retry_at)}")
            text = (f"daily call budget of app {cls.app} for division {cls.division} is spent "
                    f"({div.day_used}/{div.day_limit}); it resets at {utc_text(refusal.retry_at)}")
        else:
            wait, why = ctx.max_wait or (ctx.policy.limits.max_wait, "max_wait")
            ctx.decide(f"refused (max_wait {wait:g} s) retry after {refusal.headers['Retry-After']} s")
            text = (f"division {cls.division} of app {cls.app} cannot be served within {wait:g} s ({why}): "
                    f"its calls are queued; retry after {refusal.headers['Retry-After']} s")
        return exact_error(429, text, refusal.headers)


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)
