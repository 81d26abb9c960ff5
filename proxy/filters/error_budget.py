"""Filters ``error_budget`` and ``error_headroom``: a tool's bad requests never get the app blocked.

Both act on every request with an endpoint, with a division or without one (``current/Me``,
``oauth2/token`` when the broker is off; the broker keeps the token endpoint's budget itself), and
share one ``ErrorBook`` (``proxy.errorbudget.book``), keyed by (app, division or None, endpoint). Calls
without any credentials are keyed by the pseudo-app ``(no token)``: they never spend an app's budget.

``error_budget`` (outer, before the call budget, so a refusal costs no call):
- **Exact's block.** While Exact's own block of the key lasts, answer locally (see below).
- **Negative cache.** A GET or HEAD identical (``negative_cache.request_key``) to one Exact just
  answered 404 or 400 is answered locally with the same status, body and content type for
  ``negative_cache.ttl`` seconds, and costs no error. Writes are never cached nor answered from the
  cache; a successful write forgets the cached refusals of its endpoint.
- **Budget.** From ``budget`` counted errors (8 of Exact's 10) the key is answered locally in Exact's
  error envelope naming the cause, with ``refusal_status`` (429, never 401) and ``Retry-After`` =
  seconds until the oldest counted error leaves the window. Other endpoints and divisions flow on.
- **Headers.** Every answer for the key carries ``X-ErrorLimit-Limit`` (the budget),
  ``X-ErrorLimit-Remaining`` and ``X-ErrorLimit-Reset`` (epoch ms when the oldest counted error
  leaves the window; now + window when none is counted).

``error_headroom`` (inner, just before forward: every attempt that reaches Exact passes it):
- **Reserve before forward.** A call is sent only while counted errors + calls in flight < budget,
  so concurrent bad requests cannot pass the budget either; the others wait for the calls in flight.
- **Counting.** Every upstream answer whose status is in ``statuses`` (400, 401, 403, 404) is counted
  over the rolling ``window``; the counts persist in the store (``error_counts``).
- **Exact's block.** An upstream 429 without any ``X-RateLimit-*`` header while errors are counted on
  the key is Exact's error block: the key is not forwarded for ``block_pause`` seconds (persisted in
  ``error_blocks``), an ERROR line says so, and the tool gets the local refusal at once.

Cluster mode (``services.cluster``; set up by ``load``): the budget, the calls in flight and Exact's
blocks are the cluster's (``proxy.cluster.errors``): ``error_headroom`` reserves with one script before
forward and tells the answer in the background; when the shared server cannot be reached the call gets
``services.cluster.refused`` (503, ``Retry-After``) and nothing is sent. The negative cache is the
cluster's too (``proxy.cluster.negative``): ``error_budget`` asks the server for groups it has a hint
for, ``error_headroom``'s reservation finds the others' entries in the same round trip. The view
``services.cluster.views["errors"]`` reads the server. On a single node none of this runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from proxy.clock import utc_text
from proxy.context import Context, Next, Reply
from proxy.errorbudget.book import ErrorBook, StoreUnreachable
from proxy.errorbudget.negative_cache import Cached, NegativeCache, RequestKey, request_key
from proxy.errorbudget.settings import ErrorBudgetSettings
from proxy.errorbudget.window import Key
from proxy.errors import exact_error
from proxy.exact.classify import LIMITED_KINDS

if TYPE_CHECKING:
    from proxy.cluster.negative import SharedNegative
    from proxy.ops.metrics import Row
    from proxy.services import Services
    from proxy.store.base import Store

log = logging.getLogger("exact_proxy.error_budget")

COUNTED_KINDS = LIMITED_KINDS | {"me", "token"}  # errors count on endpoints without a division too
CACHEABLE = frozenset(("GET", "HEAD"))
MAX_CACHED_BODY = 64 * 1024
LEASE_MARGIN = 5.0  # cluster mode: a call's in-flight lease outlives the upstream total timeout by this
NO_TOKEN = "(no token)"  # the app of calls without credentials: Exact charges them to no app


def _key(ctx: Context) -> Key | None:
    cls = ctx.cls
    if not ctx.policy.error_budget.enabled or cls is None or not cls.endpoint or cls.kind not in COUNTED_KINDS:
        return None
    return (NO_TOKEN if ctx.tokenless else cls.app, cls.division, cls.endpoint)


class ErrorBudget:
    name = "error_budget"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.book = services.error_book
        self.cache = NegativeCache()
        self.shared_cache: SharedNegative | None = None  # cluster mode

    async def load(self, store: Store) -> None:
        cluster = self.services.cluster
        if cluster is None:
            await self.book.load(store, self.services.clock.time(), self.services.policy.error_budget.window)
            return
        from proxy.cluster.errors import SharedErrors
        from proxy.cluster.negative import SharedNegative

        self.book.windows.window = self.services.policy.error_budget.window
        self.shared_cache = SharedNegative(cluster)
        shared = SharedErrors(cluster, self._lease, lambda: self.services.policy.error_budget.window,
                              self.shared_cache)
        self.book.share(shared)
        cluster.views["errors"] = shared.view

    def _lease(self) -> float:
        """How long a call may hold its place: the longest upstream timeout (the broker's token calls
        have 30 s) and a margin."""
        return max(self.services.policy.forwarding.total_timeout, 30.0) + LEASE_MARGIN

    def close(self) -> None:
        if self.book.shared is not None:
            self.book.shared.close()
        if self.shared_cache is not None:
            self.shared_cache.close()

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        key = _key(ctx)
        if key is None:
            return await call_next(ctx)
        settings = ctx.policy.error_budget
        book, now = self.book, self.services.clock.time()
        book.windows.window = settings.window

        cacheable = ctx.method in CACHEABLE and settings.negative_cache_ttl > 0
        shared = self.shared_cache
        if shared is not None:
            found = None
            if cacheable and shared.hinted(key) and book.blocked_until(key, now) is None:
                found = await shared.get(key, self._cache_key(ctx))
            if found is not None:
                ctx.decide(f"answered from the shared negative cache ({found.status}, "
                           f"{now - found.stored_at:.0f} s old)")
                return ctx.answer(self.name, self._stamp(_replay(found), key, settings, now))
        elif cacheable and self.cache.has_group(key) and book.blocked_until(key, now) is None:
            hit = self.cache.get(self._cache_key(ctx), now, settings.negative_cache_ttl)
            if hit is not None:  # Exact's own answer again, even when the budget is spent
                ctx.decide(f"answered from negative cache ({hit.status}, {now - hit.stored_at:.0f} s old)")
                return ctx.answer(self.name, self._stamp(_replay(hit), key, settings, now))
        refusal = refuse(ctx, book, key, settings, now)
        if refusal is not None:
            return ctx.answer(self.name, self._stamp(refusal, key, settings, now))

        reply = await call_next(ctx)
        now = self.services.clock.time()
        if not reply.local and ctx.upstream_failure is None:
            if cacheable and reply.status in settings.negative_cache_statuses:
                await self._remember(reply, self._cache_key(ctx), key, now, settings)
            elif 200 <= reply.status < 300 and ctx.method not in CACHEABLE:
                if shared is not None:
                    shared.forget(key)  # on every node
                else:
                    self.cache.forget_group(key)  # a created or changed record may now be found
        return self._stamp(reply, key, settings, now)

    @staticmethod
    def _cache_key(ctx: Context) -> RequestKey:
        cls = ctx.cls
        assert cls is not None  # the request has a key (``_key``): classify set it
        return request_key(ctx.method, ctx.raw_path, ctx.raw_query, cls.app,
                           ctx.request.headers.get("Accept", ""))

    async def _remember(self, reply: Reply, cache_key: RequestKey, key: Key, now: float,
                        settings: ErrorBudgetSettings) -> None:
        if reply.length is None or reply.length > MAX_CACHED_BODY:
            return  # too big to cache, or of unknown length (chunked): it goes to the tool as it comes
        body = await reply.read_body()
        if len(body) > MAX_CACHED_BODY:
            return
        if self.shared_cache is not None:
            self.shared_cache.put(key, cache_key, reply.status, body, reply.headers.get("Content-Type"),
                                  settings.negative_cache_ttl)
            return
        self.cache.put(cache_key, Cached(reply.status, body, reply.headers.get("Content-Type"), now, key),
                       settings.negative_cache_entries)

    def _stamp(self, reply: Reply, key: Key, settings: ErrorBudgetSettings, now: float) -> Reply:
        book = self.book
        if book.clean(key):  # no error counted: the whole budget, a full window ahead
            used, reset = 0, now + settings.window
        else:
            used, reset = book.count(key, now), book.reset_at(key, now)
        reply.headers["X-ErrorLimit-Limit"] = str(settings.budget)
        reply.headers["X-ErrorLimit-Remaining"] = str(max(0, settings.budget - used))
        reply.headers["X-ErrorLimit-Reset"] = str(int(reset * 1000))
        return reply

    # -- status --------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        settings = self.services.policy.error_budget
        now = self.services.clock.time()
        rows = []
        for key in sorted(set(self.book.windows.keys()) | set(self.book.blocks), key=str):
            used = self.book.count(key, now)
            until = self.book.blocked_until(key, now)
            if not used and until is None:
                continue
            rows.append({"app": key[0], "division": key[1], "endpoint": key[2],
                         "errors_this_hour": used, "budget": settings.budget,
                         "resets_at": utc_text(self.book.reset_at(key, now)) if used else None,
                         "resets_in_s": round(self.book.reset_at(key, now) - now, 1) if used else None,
                         "exact_blocked_until": utc_text(until) if until is not None else None})
        return rows

    def metric_rows(self) -> Iterator[Row]:
        now = self.services.clock.time()
        for row in self.snapshot():
            labels = {"app": row["app"], "division": "" if row["division"] is None else str(row["division"]),
                      "endpoint": row["endpoint"]}
            yield ("exact_proxy_errors_this_hour", "Upstream errors counted per app, division and endpoint "
                   "in the rolling hour", labels, row["errors_this_hour"])
            until = self.book.blocked_until((row["app"], row["division"], row["endpoint"]), now)
            yield ("exact_proxy_exact_blocked_seconds", "Seconds until the proxy sends the endpoint to Exact "
                   "again after Exact blocked it (0: not blocked)", labels,
                   0 if until is None else round(max(0.0, until - now), 3))


class ErrorHeadroom:
    name = "error_headroom"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.book = services.error_book

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        key = _key(ctx)
        if key is None:
            return await call_next(ctx)
        settings, book, clock = ctx.policy.error_budget, self.book, self.services.clock
        probe = None
        if book.shared is not None and ctx.method in CACHEABLE and settings.negative_cache_ttl > 0:
            probe = ErrorBudget._cache_key(ctx)  # the shared negative cache is looked up in the same trip
        try:
            taken = await book.take(key, settings.budget, clock.time, probe)
        except StoreUnreachable:
            return self._unreachable(ctx)
        if taken is None:
            ctx.answered_by = ctx.answered_by or ErrorBudget.name  # one name in logs and metrics
            return refuse(ctx, book, key, settings, clock.time()) or _gone(ctx, settings)
        if taken.cached is not None:
            hit = taken.cached
            ctx.decide(f"answered from the shared negative cache ({hit.status}, "
                       f"{clock.time() - hit.stored_at:.0f} s old)")
            ctx.answered_by = ctx.answered_by or ErrorBudget.name
            return _replay(hit)
        if taken.waits:
            ctx.decide(f"waited for error headroom ({taken.inflight} calls in flight)")
        try:
            reply = await call_next(ctx)
        except BaseException:
            book.done(taken, clock.time(), False)
            raise
        if reply.local or ctx.upstream_failure is not None:
            book.done(taken, clock.time(), False)
            return reply
        now, cls = clock.time(), ctx.cls
        assert cls is not None  # the request has a key (``_key``): classify set it
        counted = reply.status in settings.statuses
        count = book.done(taken, now, counted)
        if counted:
            ctx.decide(f"counted error {count}/{settings.budget} {cls.endpoint}")
            if count >= settings.budget:
                log.warning("error budget of app %s, division %s, endpoint %s is spent (%d errors in %g s): "
                            "answered locally until %s", cls.app, cls.division, cls.endpoint, count,
                            settings.window, utc_text(book.reset_at(key, now)))
        elif reply.status == 429 and not any(h.lower().startswith("x-ratelimit-") for h in reply.headers):
            if book.count(key, now) > 0:
                until = now + settings.block_pause
                book.block(key, until)
                log.error("EXACT BLOCKED app %s, division %s, endpoint %s (429 without rate-limit headers "
                          "after %d errors): not forwarding it until %s", cls.app, cls.division,
                          cls.endpoint, book.count(key, now), utc_text(until))
                await reply.discard()
                ctx.answered_by = ctx.answered_by or ErrorBudget.name
                # (no cause left only with block_pause 0 and room in the budget: the block is over)
                return refuse(ctx, book, key, settings, now) or _gone(ctx, settings)
        return reply

    def _unreachable(self, ctx: Context) -> Reply:
        cluster = self.services.cluster
        assert cluster is not None  # only the shared book raises StoreUnreachable
        ctx.decide("refused (cluster state server unreachable; nothing sent)")
        ctx.answered_by = ctx.answered_by or ErrorBudget.name
        return cluster.refused("this call")


def refuse(ctx: Context, book: ErrorBook, key: Key, settings: ErrorBudgetSettings, now: float) -> Reply | None:
    """The local answer while Exact's block lasts or the budget is spent; None when neither."""
    why = book.refusal(key, settings.budget, now)
    if why is None:  # nothing counted or blocked (the common case), or room left
        return None
    endpoint, where = key[2], where_text(key)
    reason, until = why
    wait = max(1, int(until - now + 0.999))
    if reason == "blocked":
        ctx.decide(f"refused (Exact blocked {endpoint}; paused until {utc_text(until)})")
        return exact_error(settings.refusal_status,
                           f"Exact blocked {endpoint}{where} after too many errors; the proxy does not "
                           f"forward it until {utc_text(until)}", {"Retry-After": str(wait)})
    used = book.count(key, now)
    ctx.decide(f"refused (error budget {used}/{settings.budget}, retry in {wait} s)")
    return exact_error(settings.refusal_status,
                       f"error budget spent: Exact answered {used} errors for {endpoint}{where} within "
                       f"{settings.window:g} s, and blocks the whole app at {settings.exact_limit + 1}; "
                       f"retry in {wait} s", {"Retry-After": str(wait)})


def where_text(key: Key) -> str:
    return f" of app {key[0]}" if key[1] is None else f" in division {key[1]}"


def _gone(ctx: Context, settings: ErrorBudgetSettings) -> Reply:
    """The refusal when ``refuse()`` finds no cause any more: reserve() said no only when it had one, and
    a block of ``block_pause: 0`` ends as it starts."""
    return exact_error(settings.refusal_status, "error budget spent", {"Retry-After": "1"})


def _replay(hit: Cached) -> Reply:
    return Reply.make_local(hit.status, hit.body, {"X-Exact-Proxy": "negative-cache"},
                            content_type=hit.content_type or "application/json")

