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
- **Shares** (``limits.shares``, ``proxy.limits.shares``): a call of a share (the first that matches
  it), or an unshared call while some share holds a reserve, also passes its share's gate; held by it,
  it waits in the queue like any call (keeping its place while others pass) or, when its share allows
  it only past its deadline, gets a local 429 naming the share, with ``Retry-After`` (when the share
  allows it again) and the daily (cap or reserve of the day) or minutely ``X-RateLimit-*`` headers,
  ``Remaining: 0`` and the reset at that time. Without shares nothing of this runs. Cluster mode does
  not support shares yet: a start with shares fails (``ClusterError`` naming ``limits.shares``); a
  reload that adds them is ignored with an ERROR (the shared windows still bound every call).
- Decisions: ``queued N ms``, ``refused (daily budget) reset T``, ``refused (max_wait …)``,
  ``upstream 429: paused until T, replayed``, ``exact remaining M/D``; with shares ``share S: paced,
  next call at T``, ``share S: capped, next call at T``, ``held for share S's reserve, next call at
  T``, ``refused (share S: paced|capped|reserve) retry after N s``.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
from proxy.limits.share_settings import DAY, share_index
from proxy.limits.shares import ShareGate
from proxy.limits.window import Meter

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
            from proxy.cluster.settings import ClusterError

            if services.policy.limits.shares:
                raise ClusterError("limits.shares is not supported in cluster mode yet (the shares would "
                                   "be counted by each node alone, so a reserve would not hold): remove "
                                   "limits.shares or run a single proxy")
            from proxy.cluster.windows import SharedWindows

            self.shared = SharedWindows(services.cluster, services.clock, lambda: services.policy.limits)
            self.book = Book(services.clock, self.shared.division)
            services.cluster.views["windows"] = self.shared.view
        self.patience = Patience()
        self._ignored_shares: object = None  # cluster mode: the shares of a reload, ignored (said once)

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
        buckets: tuple[Meter, ...] = self.book.buckets_for(cls.app, cls.division, cls.endpoint, settings)
        gate = None
        if settings.shares:
            gate = self._gate(ctx, settings, div)
            if gate is not None:
                buckets = (*buckets, gate)
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
                    if gate is not None:
                        self._held(ctx, gate)
                try:
                    got = await div.acquire(rank, deadline, buckets)
                except asyncio.CancelledError:  # the tool gave up while its call waited
                    if settings.learn_patience:
                        self.patience.observe(self._tool(ctx), self.services.clock.time() - arrived)
                    raise
                if isinstance(got, Refusal):
                    return ctx.answer(self.name, self._refuse(ctx, cls, got, div, gate))
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

    def _gate(self, ctx: Context, settings: LimitSettings, div: Division) -> ShareGate | None:
        if self.shared is not None:  # cluster mode: shares are not supported (refused at start)
            if self._ignored_shares is not settings.shares:
                self._ignored_shares = settings.shares
                log.error("limits.shares is not supported in cluster mode yet: the reloaded shares are "
                          "ignored (the cluster's shared windows still bound every call)")
            return None
        index = share_index(settings.shares, ctx.listener.name, ctx.request.headers)
        return self.book.share_gate(div, settings, index)

    @staticmethod
    def _held(ctx: Context, gate: ShareGate) -> None:
        reason, until, holder = gate.blocked()
        if reason == "reserve":
            ctx.decide(f"held for share {holder}'s reserve, next call at {utc_text(until)}")
        elif reason is not None:
            ctx.decide(f"share {holder}: {'paced' if reason == 'pace' else 'capped'}, next call at "
                       f"{utc_text(until)}")

    def _refuse_share(self, ctx: Context, cls: Classification, refusal: Refusal, gate: ShareGate) -> Reply | None:
        reason, until, holder = gate.blocked()
        if reason is None:
            return None
        now = self.services.clock.time()
        wait = max(1, math.ceil(until - now), int(refusal.headers.get("Retry-After", "1")))
        word = {"pace": "paced", "cap": "capped"}.get(reason, "reserve")
        ctx.decide(f"refused (share {holder}: {word}) retry after {wait} s")
        board = gate.board
        day = until >= board.day_start + DAY
        reset = str(int(until * 1000))
        if day:
            headers = {"X-RateLimit-Limit": str(board.division.day_limit), "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": reset}
        else:
            headers = {"X-RateLimit-Minutely-Limit": str(board.division.minute_limit),
                       "X-RateLimit-Minutely-Remaining": "0", "X-RateLimit-Minutely-Reset": reset}
        headers["Retry-After"] = str(wait)
        where = f"division {cls.division} of app {cls.app}"
        if reason == "pace":
            text = f"share {holder} is paced in {where}: its next call may go at {utc_text(until)}"
        elif reason == "cap":
            text = (f"share {holder} has used its cap of the {'day' if day else 'minute'} in {where}; its next "
                    f"call may go at {utc_text(until)}")
        else:
            text = (f"the calls left in {where} {'today' if day else 'this minute'} are reserved for share "
                    f"{holder}; the next call may go at {utc_text(until)}")
        return exact_error(429, f"{text}; retry after {wait} s", headers)

    def _refuse(self, ctx: Context, cls: Classification, refusal: Refusal, div: Division,
                gate: ShareGate | None = None) -> Reply:
        if refusal.reason == "down" and self.services.cluster is not None:
            ctx.decide("refused (cluster state server unreachable)")
            return self.services.cluster.refused("this call")
        if gate is not None and refusal.reason == "max_wait":
            shared = self._refuse_share(ctx, cls, refusal, gate)
            if shared is not None:
                return shared
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
