"""The shared negative cache: a 404 or 400 that Exact gave one node's GET is answered by every node.

Contract
- ``SharedNegative(node)``. Keys (hash tag ``{app|division}``, like the error windows of the same key):
  ``P:{a|d}:nv:<ep>`` the endpoint group's version (INT, a day), ``P:{a|d}:n:<ep>:<sha256(request key)>``
  a HASH entry ``v`` (the group version it was stored under), ``s`` status, ``t`` content type, ``b``
  body, ``at`` ms; it expires after the cache's ttl (``SET``-like ``PX``). The version sits in the entry
  rather than in its name (design §7.3 puts it in the name) so every key a script touches is declared.
- ``put(group, request, status, body, content_type, ttl)``: stored in the background (a lost put costs at
  most one more error, which the shared budget still bounds). ``forget(group)``: after a successful
  write there, ``INCR nv``: every entry of the group is stale at once, on every node (O(1)); queued on
  ``Later`` so that an outage does not lose it.
- ``await get(group, request)``: the entry while fresh and of the group's current version, else None
  (also None when the server cannot be reached: the request then meets the shared error budget, which
  refuses it while the server is down). One round trip.
- Hints: a node asks ``get`` only for groups it has a hint for (``hinted``): it stored an entry there,
  or the error budget's ``take`` found one (``hint``), within the ttl. Other requests cost nothing here:
  ``take`` looks the entry up in the same round trip (``keys``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING

from proxy.cluster.later import Later
from proxy.cluster.link import StoreDown
from proxy.errorbudget.negative_cache import Cached, RequestKey
from proxy.errorbudget.window import Key

if TYPE_CHECKING:
    from proxy.cluster.node import ClusterNode

MAX_BODY = 16 * 1024   # the largest body kept on the server
MAX_HINTS = 10_000

# KEYS nv, entry
GET = """
local e = redis.call('HMGET', KEYS[2], 'v', 's', 't', 'b', 'at')
if e[1] and e[1] == (redis.call('GET', KEYS[1]) or '0') then
  return {e[2], e[3] or '', e[4] or '', e[5] or '0'}
end
return false
"""

# KEYS nv, entry; ARGV[2] status, [3] content type, [4] body, [5] ttl ms
PUT = """
local v = redis.call('GET', KEYS[1]) or '0'
redis.call('HSET', KEYS[2], 'v', v, 's', ARGV[2], 't', ARGV[3], 'b', ARGV[4], 'at', now_ms())
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
return 1
"""

# KEYS nv
FORGET = """
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
"""


class SharedNegative:
    def __init__(self, node: ClusterNode) -> None:
        self.link = node.link
        self.later = Later(self.link)
        self._get, self._put = self.link.script(GET), self.link.script(PUT)
        self._forget = self.link.script(FORGET)
        self._hints: dict[Key, float] = {}  # group -> monotonic time the hint ends
        self._ttl = 300.0
        self._tasks: set[asyncio.Task[None]] = set()

    def keys(self, group: Key, request: RequestKey) -> list[str]:
        app, division, endpoint = group
        tag = self.link.tag(app, "" if division is None else division)
        digest = hashlib.sha256(repr(request).encode()).hexdigest()[:32]
        return [self.link.key(tag, "nv", endpoint), self.link.key(tag, "n", endpoint, digest)]

    # -- hints -------------------------------------------------------------------------------------------
    def hinted(self, group: Key) -> bool:
        until = self._hints.get(group)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._hints[group]
            return False
        return True

    def hint(self, group: Key, ttl: float | None = None) -> None:
        if len(self._hints) >= MAX_HINTS:
            now = time.monotonic()
            self._hints = {g: u for g, u in self._hints.items() if u > now}
            if len(self._hints) >= MAX_HINTS:
                self._hints.pop(next(iter(self._hints)))
        self._hints[group] = time.monotonic() + (self._ttl if ttl is None else ttl)

    # -- entries -----------------------------------------------------------------------------------------
    async def get(self, group: Key, request: RequestKey) -> Cached | None:
        try:
            found = await self.link.run(self._get, self.keys(group, request))
        except StoreDown:
            return None
        if not found:
            return None
        status, ctype, body, at = found
        ctype = ctype.decode() if isinstance(ctype, bytes) else str(ctype)
        return Cached(int(status), bytes(body), ctype or None, int(at) / 1000 - self.link.offset, group)

    def put(self, group: Key, request: RequestKey, status: int, body: bytes, content_type: str | None,
            ttl: float) -> None:
        if len(body) > MAX_BODY or ttl <= 0:
            return
        self._ttl = ttl
        self.hint(group, ttl)
        task = asyncio.get_running_loop().create_task(
            self._put_now(self.keys(group, request), [status, content_type or "", body, int(ttl * 1000)]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_now(self, keys: list[str], args: list[str | int | bytes]) -> None:
        try:
            await self.link.run(self._put, keys, args)  # type: ignore[arg-type]
        except StoreDown:
            pass

    def forget(self, group: Key) -> None:
        self._hints.pop(group, None)
        app, division, endpoint = group
        tag = self.link.tag(app, "" if division is None else division)
        self.later.add(self._forget, [self.link.key(tag, "nv", endpoint)], precious=True)

    def close(self) -> None:
        self.later.close()
        for task in self._tasks:
            task.cancel()
