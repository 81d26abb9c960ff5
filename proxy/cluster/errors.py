"""The shared error budget: every node's calls and Exact's errors per (app, division, endpoint) in one
rolling window on the server, reserved before forward.

Contract
- ``SharedErrors(node, lease, window, negative)`` is the ``Shared`` backend of ``ErrorBook`` in cluster
  mode (``ErrorBook.share``); ``lease()`` is how long a call may be in flight (the upstream total
  timeout + 5 s), ``window()`` the error window, in seconds.
- Keys (design §7.3), hash tag ``{app|division}``: ``P:{a|d}:e:<ep>`` ZSET of counted errors (member:
  the call's id, score: ms), ``:i:<ep>`` ZSET of calls in flight (score: lease expiry), ``:b:<ep>``
  Exact's block until (ms).
- ``await take(book, key, budget, probe)``: **one script, one round trip** before forward. It prunes
  both sets and answers ``blocked`` while the block lasts, ``cached`` when ``probe`` (a GET's request
  key) has a shared negative-cache entry (``proxy.cluster.negative``), ``spent`` when counted >= budget,
  ``wait`` when counted + in flight >= budget, else adds an in-flight lease (member: a new id unique
  across nodes and restarts, score: now + ``lease()``) and answers ``ok``. A lease of a node that died
  expires by itself. Every reply refreshes the book's copy of the key (``ErrorBook.seen``).
  Returns a ``Taken`` (``ok``: with ``lease``; ``cached``: with ``cached``, nothing held) or None
  (blocked, spent). ``wait``: the request waits in arrival order on this node; only the first waiter
  asks again, every ``POLL`` seconds of real time or at once when a call of this node ends. ``StoreDown``
  becomes ``StoreUnreachable``: nothing was taken.
- ``done(taken, error_at)`` / ``block(key, until)``: queued on ``Later`` (off the reply's path, kept
  through an outage): ``done`` removes the lease and, with ``error_at``, adds the counted error (ZADD NX
  of the call's id: a resend changes nothing); ``block`` keeps the later of two blocks.
- ``await view()``: ``services.cluster.views["errors"]``: per key, read from the server: counted errors,
  calls in flight, Exact's block.
- Times: scores are the cluster's clock in ms (``Link.now_ms``/``TIME``); the book gets them on the
  node's clock (minus ``Link.offset``).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.cluster.later import Later
from proxy.cluster.link import StoreDown
from proxy.errorbudget.book import ErrorBook, StoreUnreachable, Taken
from proxy.errorbudget.negative_cache import Cached, RequestKey
from proxy.errorbudget.window import Key

if TYPE_CHECKING:
    from proxy.cluster.negative import SharedNegative
    from proxy.cluster.node import ClusterNode

POLL = 0.25  # seconds (real time) between two looks of a node's first waiter

# KEYS e, i, b [, nv, entry]; ARGV[2] budget, [3] id, [4] lease ms, [5] window ms
TAKE = """
local now = now_ms()
local budget = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[5]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local counted = redis.call('ZCARD', KEYS[1])
local inflight = redis.call('ZCARD', KEYS[2])
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0')
local flat = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local times = {}
for j = 2, #flat, 2 do times[#times + 1] = tonumber(flat[j]) end
local verdict, cached = 'ok', {}
if blocked > now then
  verdict = 'blocked'
else
  if KEYS[5] then
    local e = redis.call('HMGET', KEYS[5], 'v', 's', 't', 'b', 'at')
    if e[1] and e[1] == (redis.call('GET', KEYS[4]) or '0') then
      verdict, cached = 'cached', {e[2], e[3] or '', e[4] or '', e[5] or '0'}
    end
  end
  if verdict == 'ok' then
    if counted >= budget then
      verdict = 'spent'
    elseif not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
      if counted + inflight >= budget then
        verdict = 'wait'
      else
        redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
        redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[4]))
        inflight = inflight + 1
      end
    end
  end
end
return {verdict, now, counted, inflight, blocked, times, cached}
"""

# KEYS e, i; ARGV[2] id, [3] error time ms or '', [4] window ms
DONE = """
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 60000)
end
return 1
"""

# KEYS b; ARGV[2] until ms
BLOCK = """
local now, till = now_ms(), tonumber(ARGV[2])
if till > now and till > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], till, 'PX', till - now)
end
return 1
"""

class _Wait:
    """The server said ``wait``: no room yet."""


_WAIT = _Wait()


class SharedErrors:
    def __init__(self, node: ClusterNode, lease: Callable[[], float], window: Callable[[], float],
                 negative: SharedNegative | None = None) -> None:
        self.node, self.link = node, node.link
        self.lease, self.window, self.negative = lease, window, negative
        self.later = Later(self.link)
        self._take, self._done = self.link.script(TAKE), self.link.script(DONE)
        self._block = self.link.script(BLOCK)
        self._ids = itertools.count(1)
        self._run = f"{node.name}:{secrets.token_hex(3)}"  # ids stay unique when a node restarts
        self._queues: dict[Key, list[asyncio.Event]] = {}

    def keys(self, key: Key) -> tuple[str, str, str]:
        app, division, endpoint = key
        tag = self.link.tag(app, "" if division is None else division)
        return self.link.key(tag, "e", endpoint), self.link.key(tag, "i", endpoint), self.link.key(tag, "b", endpoint)

    def _id(self) -> str:
        return f"{self._run}:{next(self._ids)}"

    # -- before forward --------------------------------------------------------------------------------
    async def take(self, book: ErrorBook, key: Key, budget: int, probe: RequestKey | None) -> Taken | None:
        if key not in self._queues:  # nobody of this node waits: ask at once
            got = await self._try(book, key, budget, probe, 0)
            if not isinstance(got, _Wait):
                return got
        me = asyncio.Event()
        queue = self._queues.setdefault(key, [])
        queue.append(me)
        waits = 0
        try:
            while True:
                if queue[0] is me:  # the first waiter looks every POLL, or when a call of this node ends
                    try:
                        await asyncio.wait_for(me.wait(), POLL)
                    except TimeoutError:
                        pass
                else:  # arrival order: the others wait for their turn
                    await me.wait()
                me.clear()
                if queue[0] is not me:
                    continue
                waits += 1
                got = await self._try(book, key, budget, probe, waits)
                if not isinstance(got, _Wait):
                    return got
        finally:
            queue.remove(me)
            if queue:
                queue[0].set()  # the next one looks at once (there may be room for it too)
            elif self._queues.get(key) is queue:
                del self._queues[key]

    async def _try(self, book: ErrorBook, key: Key, budget: int, probe: RequestKey | None,
                   waits: int) -> Taken | None | _Wait:
        keys = list(self.keys(key))
        if probe is not None and self.negative is not None:
            keys += self.negative.keys(key, probe)
        lease = self._id()
        try:
            reply = await self.link.run(self._take, keys, [budget, lease, int(self.lease() * 1000),
                                                           int(self.window() * 1000)])
        except StoreDown as exc:
            raise StoreUnreachable(str(exc)) from exc
        verdict, _now, _counted, inflight, blocked, times, cached = reply
        off = self.link.offset
        book.seen(key, [t / 1000 - off for t in times], blocked / 1000 - off if blocked else None,
                  self.link.clock.time())
        verdict = _text(verdict)
        if verdict == "ok":
            return Taken(key, waits, int(inflight), lease)
        if verdict == "cached" and self.negative is not None:
            status, ctype, body, at = cached
            self.negative.hint(key)
            hit = Cached(int(status), bytes(body), _text(ctype) or None, int(at) / 1000 - off, key)
            return Taken(key, waits, int(inflight), cached=hit)
        return _WAIT if verdict == "wait" else None

    # -- after the answer (off the reply's path) ---------------------------------------------------------
    def done(self, taken: Taken, error_at: float | None) -> None:
        e, i, _b = self.keys(taken.key)
        at = "" if error_at is None else int((error_at + self.link.offset) * 1000)
        self.later.add(self._done, [e, i], [taken.lease or self._id(), at, int(self.window() * 1000)],
                       precious=error_at is not None, then=lambda: self._wake(taken.key))

    def block(self, key: Key, until: float) -> None:
        self.later.add(self._block, [self.keys(key)[2]], [int((until + self.link.offset) * 1000)], precious=True)

    def _wake(self, key: Key) -> None:
        queue = self._queues.get(key)
        if queue:
            queue[0].set()

    def close(self) -> None:
        self.later.close()

    # -- the shared view -------------------------------------------------------------------------------
    async def view(self) -> list[dict[str, Any]]:
        link = self.link
        arg = link.now_arg()
        if arg:
            now = int(arg)
        else:
            t = await link.command("TIME")
            now = int(t[0]) * 1000 + int(t[1]) // 1000
        found: set[tuple[str, str, str]] = set()
        cursor: Any = 0
        start = link.key("{")
        while True:
            cursor, names = await link.command("SCAN", cursor, "MATCH", start + "*}:[eib]:*", "COUNT", 1000)
            for name in names:
                parsed = _parse(_text(name)[len(start) - 1:])
                if parsed is not None:
                    found.add(parsed)
            if int(cursor) == 0:
                break
        rows = []
        window = int(self.window() * 1000)
        for app, division, endpoint in sorted(found):
            key: Key = (app, int(division) if division else None, endpoint)
            e, i, b = self.keys(key)
            counted = int(await link.command("ZCOUNT", e, now - window + 1, "+inf"))
            inflight = int(await link.command("ZCOUNT", i, now + 1, "+inf"))
            blocked = int(await link.command("GET", b) or 0)
            if counted or inflight or blocked > now:
                rows.append({"app": app, "division": key[1], "endpoint": endpoint, "errors_this_hour": counted,
                             "in_flight": inflight, "exact_blocked_until_ms": blocked if blocked > now else None})
        return rows


def _parse(rest: str) -> tuple[str, str, str] | None:
    """``{app|div}:e:<ep>`` -> (app, div, ep)."""
    close = rest.find("}:")
    if not rest.startswith("{") or close < 0 or len(rest) < close + 5 or rest[close + 3] != ":":
        return None
    app, _, division = rest[1:close].rpartition("|")
    return app, division, rest[close + 4:]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
