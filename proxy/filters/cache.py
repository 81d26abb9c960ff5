"""Filter ``cache``: answers of the endpoints listed in ``cache`` are reused for their TTL.

Contract (off for every endpoint not listed in ``cache``):
- A GET to a listed endpoint (``ctx.cls.endpoint``: ``system/divisions``, ``current/me``) whose
  ``proxy.reuse.key.answer_key`` (upstream, target, ``Accept``…, app and token chain or
  ``Authorization``, link rewriting) matches an answer Exact gave less than ``ttl`` seconds ago is
  answered from memory: the same status, headers and body, plus ``Age`` (whole seconds since Exact
  answered), with the decision ``answered from cache (12 s old)``. A hit makes no Exact call and
  costs no call or error budget (it sits before ``coalesce``, ``error_budget`` and ``call_budget``);
  the metrics count it as answered locally by ``cache``.
- Only Exact's 200 answers (or a coalesced copy of one) are kept, with a body of at most
  ``cache.max_entry`` bytes; at most ``cache.max_entries`` answers and ``cache.max_bytes`` together
  (the least recently used go first). A tool's ``Cache-Control: no-cache`` (or ``no-store``) skips
  the lookup (``cache bypassed (no-cache)``); the fresh answer is kept.
- A write (POST, PUT, DELETE, PATCH) to a listed endpoint forgets every answer of that endpoint, in
  every division and for every user, when it arrives and again when its answer comes back; an answer
  that was under way meanwhile is not kept (``cache forgot N answers of <endpoint>``).
- In memory only and node-local: a restart starts empty, and in cluster mode (``services.cluster``)
  each node caches its own.
- Status (``snapshot``): entries, bytes, hits, answers kept, forgotten; metrics
  ``exact_proxy_cache_answers``, ``exact_proxy_cache_entries``, ``exact_proxy_cache_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from proxy.context import Context, Next, Reply
from proxy.reuse.buffer import hold
from proxy.reuse.key import WRITES, answer_key, scope_of
from proxy.reuse.store import AnswerStore

if TYPE_CHECKING:
    from proxy.ops.metrics import Row
    from proxy.services import Services

METHODS = WRITES | {"GET"}
KEPT_FROM = (None, "coalesce")  # answered by Exact, or a copy of Exact's answer to a call in flight


class Cache:
    name = "cache"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = AnswerStore()
        self.hits = 0
        self.kept = 0
        self.forgotten = 0

    def wants(self, ctx: Context) -> bool:
        ttls = ctx.policy.cache.ttls
        return bool(ttls) and ctx.method in METHODS and ctx.cls is not None and ctx.cls.endpoint in ttls

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"entries": len(self.store.entries), "bytes": self.store.bytes, "hits": self.hits,
                 "kept": self.kept, "forgotten": self.forgotten, "evicted": self.store.evicted}]

    def metric_rows(self) -> Iterator[Row]:
        yield ("exact_proxy_cache_answers", "Answers given from the answer cache (no Exact call)", {}, self.hits)
        yield ("exact_proxy_cache_entries", "Answers held in the answer cache", {}, len(self.store.entries))
        yield ("exact_proxy_cache_bytes", "Bytes held in the answer cache", {}, self.store.bytes)

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        scope = scope_of(ctx)
        assert scope is not None and ctx.cls is not None and ctx.cls.endpoint is not None  # wants()
        if ctx.method != "GET":
            self._forget(ctx, scope)
            try:
                return await call_next(ctx)
            finally:
                self._forget(ctx, scope)
        key = answer_key(ctx)
        if key is None:
            return await call_next(ctx)
        settings, clock = ctx.policy.cache, self.services.clock
        ttl = settings.ttls[ctx.cls.endpoint]
        control = ctx.request.headers.get("Cache-Control", "").lower()
        if "no-cache" in control or "no-store" in control:
            ctx.decide("cache bypassed (no-cache)")
        else:
            now = clock.time()
            entry = self.store.get(key, now, ttl)
            if entry is not None:
                self.hits += 1
                age = max(0, int(now - entry.stored))
                ctx.decide(f"answered from cache ({age} s old)")
                reply = entry.held.reply()
                reply.headers["Age"] = str(age)
                return ctx.answer(self.name, reply)
        generation = self.store.generation(scope)
        reply = await call_next(ctx)
        if reply.status != 200 or ctx.answered_by not in KEPT_FROM or ctx.upstream_failure is not None:
            return reply
        held = await hold(reply, settings.max_entry)
        if held is not None and self.store.put(key, held, clock.time(), generation, settings.max_entries,
                                               settings.max_bytes, settings.max_entry):
            self.kept += 1
        return reply

    def _forget(self, ctx: Context, scope: tuple[str, str]) -> None:
        gone = self.store.forget(scope)
        if gone:
            self.forgotten += gone
            ctx.decide(f"cache forgot {gone} answer{'s' if gone != 1 else ''} of {scope[1]}")
