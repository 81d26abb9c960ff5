"""This node's place in the cluster: the link, its heartbeat, the shared view, and the 503 of a node
that cannot reach the server.

Contract
- ``ClusterNode(settings, clock)`` is ``services.cluster`` in cluster mode (None on a single node).
  ``await open()`` connects and starts the heartbeat (every 2 s: ``P:nodes``, a sorted set of node
  name to the server's time, and ``P:node:<name>``, a small hash that expires); ``await close()``.
- ``healthy()``: (ok, reason). Not ok while the server is unreachable: ``/_proxy/health`` answers 503
  so that a balancer drains the node.
- ``await view()``: the cluster's shared view for the status page: the server, whether it answers,
  the live nodes (heartbeat within 10 s), and every registered ``views[name]()`` (the shared windows,
  error counts, chains), each read from the server, never from this node's memory.
- ``refused(what)``: the local answer while the server is unreachable: 503, ``Retry-After``, Exact's
  error envelope naming the cause and saying that nothing was sent to Exact.
- ``metric_rows()``: ``exact_proxy_cluster_store_up`` and ``exact_proxy_cluster_offset_seconds``, with
  this node's name as a label, and the shared ``exact_proxy_cluster_nodes_live``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from proxy.clock import Clock, utc_text
from proxy.cluster.link import RETRY_AFTER, Link, StoreDown
from proxy.cluster.settings import ClusterError, ClusterSettings

__all__ = ["ClusterError", "ClusterNode"]
from proxy.context import Reply
from proxy.errors import exact_error

if TYPE_CHECKING:
    from proxy.ops.metrics import Row

log = logging.getLogger("exact_proxy.cluster")

HEARTBEAT = 2.0   # seconds, real time
LIVE = 10.0       # a node is live while its heartbeat is younger than this


class ClusterNode:
    def __init__(self, settings: ClusterSettings, clock: Clock) -> None:
        self.settings = settings
        self.link = Link(settings, clock)
        self.name = self.link.node
        self.views: dict[str, Callable[[], Awaitable[Any]]] = {}
        self._beat: asyncio.Task[None] | None = None
        self.started = time.time()
        self.live = 0  # live nodes at the last heartbeat (a shared gauge)

    async def open(self) -> None:
        await self.link.open()
        log.info("cluster mode: node %s on %s (%s)", self.name, self.settings.safe_url(),
                 "reachable" if self.link.up else "not reachable yet: closed until it answers")
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat(), name="cluster-heartbeat")

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        try:
            if self.link.up:
                await self.link.command("ZREM", self.link.key("nodes"), self.name)
        except StoreDown:
            pass
        await self.link.close()

    def healthy(self) -> tuple[bool, str]:
        return (True, "") if self.link.up else (False, self.link.why)

    def refused(self, what: str = "this call") -> Reply:
        return exact_error(503, f"{what} was not sent to Exact: the cluster's shared state server is "
                           f"unreachable, so this node cannot know whether it fits Exact's limits; nothing was "
                           f"sent to Exact. Retry after {RETRY_AFTER} s.", {"Retry-After": str(RETRY_AFTER)})

    async def _heartbeat(self) -> None:
        while True:
            try:
                if self.link.up:
                    await self._beat_once()
            except StoreDown:
                pass
            except Exception:  # a heartbeat must never end the node
                log.exception("cluster heartbeat failed")
            await asyncio.sleep(HEARTBEAT)

    async def _beat_once(self) -> None:
        link = self.link
        server = await link.command("TIME")
        now_ms = int(server[0]) * 1000 + int(server[1]) // 1000
        link.saw_time(now_ms)
        await link.command("ZADD", link.key("nodes"), now_ms, self.name)
        info = link.key("node", self.name)
        await link.command("HSET", info, "pid", os.getpid(), "started", utc_text(self.started),
                           "seen", utc_text(now_ms / 1000))
        await link.command("PEXPIRE", info, int(LIVE * 1000 * 6))
        await link.command("ZREMRANGEBYSCORE", link.key("nodes"), 0, now_ms - 86_400_000)
        self.live = int(await link.command("ZCOUNT", link.key("nodes"), now_ms - int(LIVE * 1000), "+inf"))

    async def live_nodes(self) -> list[dict[str, Any]]:
        link = self.link
        server = await link.command("TIME")
        now_ms = int(server[0]) * 1000 + int(server[1]) // 1000
        rows = await link.command("ZRANGE", link.key("nodes"), 0, -1, "WITHSCORES")
        pairs = rows if rows and isinstance(rows[0], list | tuple) else list(zip(rows[::2], rows[1::2], strict=True))
        out = []
        for member, score in pairs:
            name = member.decode() if isinstance(member, bytes) else str(member)
            age = (now_ms - float(score)) / 1000
            out.append({"node": name, "last_seen_s": round(age, 1), "live": age <= LIVE,
                        "this": name == self.name})
        return out

    async def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.name, "server": self.settings.safe_url(), "reachable": self.link.up,
                               "offset_s": round(self.link.offset, 3)}
        if not self.link.up:
            out["reason"] = self.link.why
            return out
        try:
            out["nodes"] = await self.live_nodes()
            for name, read in self.views.items():
                out[name] = await read()
        except StoreDown:
            out["reachable"], out["reason"] = False, self.link.why
        return out

    def metric_rows(self) -> Iterator[Row]:
        labels = {"node": self.name}
        yield ("exact_proxy_cluster_store_up", "1 while this node reaches the cluster's shared state server",
               labels, int(self.link.up))
        yield ("exact_proxy_cluster_nodes_live", "Nodes whose heartbeat the cluster server saw in the last "
               f"{LIVE:g} s (shared; as of this node's last heartbeat)", {}, self.live)
        yield ("exact_proxy_cluster_offset_seconds", "The cluster server's clock minus this node's",
               labels, round(self.link.offset, 3))
