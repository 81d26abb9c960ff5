"""Learned mandatory filters, shared: an endpoint one node learned costs the other nodes no 400.

Contract
- ``SharedFilters(node)``; key ``P:mf``, a HASH endpoint -> ``$filter`` expression, kept forever (like
  the single node's store namespace ``learned_filters``).
- ``await load()``: every shared filter (at start; {} when the server cannot be reached).
- ``await refresh(into)``: before an unfiltered GET of an endpoint this node does not know, the node
  reads what the others learned since, at most once per ``REFRESH`` seconds (real time): ``HLEN``,
  and ``HGETALL`` only when it changed. So a filter learned elsewhere is used here within a second;
  a GET in that second may still cost one 400 (bounded: one per endpoint and node).
- ``await learn(endpoint, expr)``: ``HSETNX`` then ``HGET`` in one script: the expression every node
  uses is the first one stored (the caller uses the one returned). When the server cannot be reached the
  node keeps its own and stores it at the next ``refresh``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from proxy.cluster.link import StoreDown

if TYPE_CHECKING:
    from proxy.cluster.node import ClusterNode

REFRESH = 1.0

# KEYS mf; ARGV[2] endpoint, [3] expression
LEARN = """
redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
return redis.call('HGET', KEYS[1], ARGV[2])
"""


class SharedFilters:
    def __init__(self, node: ClusterNode) -> None:
        self.link = node.link
        self.key = self.link.key("mf")
        self._learn = self.link.script(LEARN)
        self._seen = -1          # HLEN when last read
        self._next = 0.0         # monotonic time of the next refresh
        self._unsaved: dict[str, str] = {}

    async def load(self) -> dict[str, str]:
        try:
            found = await self.link.command("HGETALL", self.key)
        except StoreDown:
            return {}
        out = _pairs(found)
        self._seen = len(out)
        return out

    async def refresh(self, into: dict[str, str]) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + REFRESH
        try:
            for endpoint, expr in list(self._unsaved.items()):
                into[endpoint] = await self._store(endpoint, expr)
                del self._unsaved[endpoint]
            if int(await self.link.command("HLEN", self.key)) == self._seen:
                return
            found = _pairs(await self.link.command("HGETALL", self.key))
        except StoreDown:
            return
        self._seen = len(found)
        into.update(found)

    async def learn(self, endpoint: str, expr: str) -> str:
        try:
            return await self._store(endpoint, expr)
        except StoreDown:
            self._unsaved[endpoint] = expr
            return expr

    async def _store(self, endpoint: str, expr: str) -> str:
        got = await self.link.run(self._learn, [self.key], [endpoint, expr])
        return got.decode() if isinstance(got, bytes) else str(got or expr)


def _pairs(found: Any) -> dict[str, str]:
    if isinstance(found, dict):
        items = list(found.items())
    else:
        items = list(zip(found[::2], found[1::2], strict=True))
    return {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in items}
