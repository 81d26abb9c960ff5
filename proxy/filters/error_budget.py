"""Filter ``error_budget``: a tool's bad requests never get the app blocked by Exact.

Contract, for requests with a division and an endpoint (others pass untouched):
- **Counting.** Every upstream answer whose status is in ``error_budget.statuses`` (400, 401, 403,
  404) is counted per (app, division, endpoint) over a rolling ``window`` (an hour). Counts persist in
  the store (namespace ``error_counts``) and survive a restart.
- **Budget.** From ``budget`` counted errors (8 of Exact's 10) requests to that division and endpoint
  are answered locally, in Exact's error envelope naming the cause, with ``refusal_status`` (429, never
  401) and ``Retry-After`` = seconds until the oldest counted error leaves the window. Other endpoints
  and divisions flow on.
- **Negative cache.** A GET or HEAD identical (``negative_cache.request_key``) to one Exact just
  answered 404 or 400 is answered locally with the same status, body and content type for
  ``negative_cache.ttl`` seconds, and costs no error. Writes are counted but never cached nor answered
  from the cache; a successful write forgets the cached refusals of its endpoint.
- **Exact's own block.** An upstream 429 without any ``X-RateLimit-*`` header while errors are counted
  on that endpoint is Exact's error block: the endpoint is not forwarded for ``block_pause`` seconds
  (persisted in ``error_blocks``), and an ERROR line says so.
- **Headers.** Every answer for a division and endpoint carries ``X-ErrorLimit-Limit`` (the budget),
  ``X-ErrorLimit-Remaining`` and ``X-ErrorLimit-Reset`` (epoch ms when the oldest counted error leaves
  the window).
"""

from __future__ import annotations

import logging
import time

from ..errorbudget.negative_cache import Cached, NegativeCache, request_key
from ..errorbudget.window import ErrorWindows, Key, key_text, parse_key
from ..errors import exact_error

log = logging.getLogger("exact_proxy.error_budget")

COUNTS, BLOCKS = "error_counts", "error_blocks"
COUNTED_KINDS = frozenset(("rest", "bulk", "sync", "read", "xml"))
CACHEABLE = frozenset(("GET", "HEAD"))
MAX_CACHED_BODY = 64 * 1024


class ErrorBudget:
    name = "error_budget"

    def __init__(self, services) -> None:
        self.services = services
        self.windows = ErrorWindows(3600.0)
        self.cache = NegativeCache()
        self.blocks: dict[Key, float] = {}
        self.store = None

    async def load(self, store) -> None:
        self.store = store
        now = self.services.clock.time()
        self.windows.window = self.services.policy.error_budget.window
        for text, times in (await store.load(COUNTS)).items():
            key = parse_key(text)
            if key is not None and isinstance(times, list):
                self.windows.restore(key, [float(t) for t in times], now)
        for text, until in (await store.load(BLOCKS)).items():
            key = parse_key(text)
            if key is not None and isinstance(until, int | float) and until > now:
                self.blocks[key] = float(until)

    async def handle(self, ctx, call_next):
        settings = ctx.policy.error_budget
        cls = ctx.cls
        if (not settings.enabled or cls is None or cls.division is None or not cls.endpoint
                or cls.kind not in COUNTED_KINDS):
            return await call_next(ctx)
        self.windows.window = settings.window
        clock = self.services.clock
        key: Key = (cls.app, cls.division, cls.endpoint)
        now = clock.time()

        until = self.blocks.get(key)
        if until is not None and until > now:
            ctx.decide(f"refused (Exact blocked {cls.endpoint}; paused until {_iso(until)})")
            return self._stamp(exact_error(settings.refusal_status,
                               f"Exact blocked {cls.endpoint} for division {cls.division} after too many "
                               f"errors; the proxy does not forward it until {_iso(until)}",
                               {"Retry-After": str(max(1, int(until - now + 0.999)))}), key, settings, now)

        cacheable = ctx.method in CACHEABLE and settings.negative_cache_ttl > 0
        if cacheable and self.cache.has_group(key):
            hit = self.cache.get(self._cache_key(ctx), now, settings.negative_cache_ttl)
            if hit is not None:
                ctx.decide(f"answered from negative cache ({hit.status}, {now - hit.stored_at:.0f} s old)")
                reply = _replay(hit)
                return self._stamp(reply, key, settings, now)

        used = self.windows.count(key, now)
        if used >= settings.budget:
            wait = max(1, int(self.windows.reset_at(key, now) - now + 0.999))
            ctx.decide(f"refused (error budget {used}/{settings.budget}, retry in {wait} s)")
            return self._stamp(exact_error(settings.refusal_status,
                               f"error budget spent: Exact answered {used} errors for {cls.endpoint} in "
                               f"division {cls.division} within {settings.window:g} s, and blocks the "
                               f"whole app at {settings.exact_limit + 1}; retry in {wait} s",
                               {"Retry-After": str(wait)}), key, settings, now)

        reply = await call_next(ctx)
        if reply.local or ctx.upstream_failure is not None:
            return self._stamp(reply, key, settings, clock.time())
        now = clock.time()
        status = reply.status
        if status in settings.statuses:
            count = self.windows.add(key, now)
            ctx.decide(f"counted error {count}/{settings.budget} {cls.endpoint}")
            self._persist(key)
            if count >= settings.budget:
                log.warning("error budget of app %s, division %s, endpoint %s is spent (%d errors in %g s): "
                            "answered locally until %s", cls.app, cls.division, cls.endpoint, count,
                            settings.window, _iso(self.windows.reset_at(key, now)))
            if cacheable and status in settings.negative_cache_statuses:
                await self._remember(reply, self._cache_key(ctx), key, now, settings)
        elif status == 429 and not any(h.lower().startswith("x-ratelimit-") for h in reply.headers):
            if self.windows.count(key, now) > 0:
                until = now + settings.block_pause
                self.blocks[key] = until
                if self.store is not None:
                    self.store.put(BLOCKS, key_text(key), until)
                ctx.decide(f"Exact blocked {cls.endpoint}; paused until {_iso(until)}")
                log.error("EXACT BLOCKED app %s, division %s, endpoint %s (429 without rate-limit headers "
                          "after %d errors): not forwarding it until %s", cls.app, cls.division, cls.endpoint,
                          self.windows.count(key, now), _iso(until))
        elif 200 <= status < 300 and ctx.method not in CACHEABLE:
            self.cache.forget_group(key)
        return self._stamp(reply, key, settings, now)

    @staticmethod
    def _cache_key(ctx) -> tuple:
        return request_key(ctx.method, ctx.raw_path, ctx.raw_query, ctx.cls.app, ctx.request.headers.get("Accept", ""))

    async def _remember(self, reply, cache_key, key, now, settings) -> None:
        if reply.length is not None and reply.length > MAX_CACHED_BODY:
            return
        body = await reply.read_body(MAX_CACHED_BODY + 1)
        if len(body) > MAX_CACHED_BODY:
            return
        self.cache.put(cache_key, Cached(reply.status, body, reply.headers.get("Content-Type"), now, key),
                       settings.negative_cache_entries)

    def _persist(self, key: Key) -> None:
        if self.store is not None:
            times = self.windows.times(key)
            if times:
                self.store.put(COUNTS, key_text(key), times)
            else:
                self.store.delete(COUNTS, key_text(key))

    def _stamp(self, reply, key: Key, settings, now: float):
        used = self.windows.count(key, now)
        reply.headers["X-ErrorLimit-Limit"] = str(settings.budget)
        reply.headers["X-ErrorLimit-Remaining"] = str(max(0, settings.budget - used))
        reply.headers["X-ErrorLimit-Reset"] = str(int(self.windows.reset_at(key, now) * 1000))
        return reply

    # -- status --------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict]:
        settings = self.services.policy.error_budget
        now = self.services.clock.time()
        rows = []
        for key in sorted(set(self.windows.keys()) | set(self.blocks), key=str):
            used = self.windows.count(key, now)
            until = self.blocks.get(key)
            if not used and not (until and until > now):
                continue
            rows.append({"app": key[0], "division": key[1], "endpoint": key[2],
                         "errors_this_hour": used, "budget": settings.budget,
                         "resets_at": _iso(self.windows.reset_at(key, now)) if used else None,
                         "exact_blocked_until": _iso(until) if until and until > now else None})
        return rows

    def metric_rows(self):
        for row in self.snapshot():
            yield ("exact_proxy_errors_this_hour", "Upstream errors counted per app, division and endpoint "
                   "in the rolling hour", {"app": row["app"], "division": str(row["division"]),
                                           "endpoint": row["endpoint"]}, row["errors_this_hour"])


def _replay(hit: Cached):
    from ..context import Reply

    headers = {"X-Exact-Proxy": "negative-cache"}
    reply = Reply.make_local(hit.status, hit.body, headers, content_type=hit.content_type or "application/json")
    return reply


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
