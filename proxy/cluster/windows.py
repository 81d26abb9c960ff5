"""Cluster mode's minute and day windows: every node of the cluster reserves its calls in one set of
windows per app and division on the shared server, so that together they never send Exact more than
the windows allow.

Contract
- ``SharedWindows(node, clock, limits)`` belongs to the ``call_budget`` filter in cluster mode;
  ``limits()`` is the current policy's ``limits`` section. ``division(app, division, settings, clock)``
  is the ``Book``'s factory: a ``proxy.cluster.queue.SharedDivision``, the node's cache of the
  division's last reply from the server plus its waiters.
- Each decision is one atomic script (``proxy.cluster.windows_lua``) that reserves before the call is
  forwarded: ``reserve`` (the fast path, one round trip), ``admit`` (tickets of the global queue),
  ``learn`` (Exact's headers), ``pause`` (Exact's 429), ``release`` (a call never sent, in the same
  minute only), ``seed``. Every reply carries the server's time (``link.saw_time``) and refreshes the
  division's cache. ``StoreDown`` propagates: the caller fails closed.
- ``news(d, headers, now)``: whether Exact's headers may tell the server something its last reply
  (``d``) did not show; only then does an answer cost a ``learn``.
- ``spawn(coro)`` runs what follows an answer (``learn``, ``release``, ``pause``) in the background: no
  latency for the reply; a failure is logged at debug and dropped (the call was counted already).
- ``view()`` (``services.cluster.views["windows"]``) lists every division on the server (SCAN for
  ``<prefix>:{*}:w``) like ``Book.snapshot()``, with the cluster-wide queue length.
- ``reseed(lost)`` (``link.on_up``): after the server lost its data, the windows this node knows are
  written back by maximum: the minute on file counts as spent, the day at its count plus two minutes'
  allowance; the waiting tickets come back with the next heartbeat.
- Token buckets (``limits.buckets``) stay node-local: a node takes its own buckets before it asks the
  server, so each node applies a bucket's rate on its own (N nodes: N times the rate).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.clock import Clock, utc_text
from proxy.cluster import windows_lua as lua
from proxy.cluster.link import StoreDown
from proxy.exact.ratelimit import header_int
from proxy.limits.settings import LimitSettings
from proxy.limits.window import Window

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from proxy.cluster.node import ClusterNode
    from proxy.cluster.queue import SharedDivision

log = logging.getLogger("exact_proxy.cluster")


@dataclass
class State:
    """One script's reply: the division as the server has it now (ms: the windows' clock)."""

    reason: str
    until: int
    now: int
    ms: int
    mu: int
    ds: int
    du: int
    ml: int
    dl: int
    lm: int
    ld: int
    pu: int
    st: int
    kn: int
    queue: int
    priority_queue: int
    probe: int
    ticket: str = ""
    score: int = 0
    granted: tuple[str, ...] = ()

    @classmethod
    def read(cls, raw: Sequence[Any]) -> State:
        r = [v.decode() if isinstance(v, bytes) else v for v in raw]
        n = [int(v) for v in r[1:17]]
        s = cls(str(r[0]), n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], n[9], n[10], n[11], n[12],
                n[13], n[14], n[15])
        if len(r) > 17:
            s.ticket, s.score, s.granted = str(r[17]), int(r[18]), tuple(str(t) for t in r[19:])
        return s


class SharedWindows:
    ticket_ttl = 3.0     # seconds (real time) a waiting ticket lives without its node's heartbeat
    probe_lease = 30.0   # seconds (real time) before a dead node's probe lets another node probe
    poll = 0.25          # seconds (real time) between a waiting node's looks at the queue

    def __init__(self, node: ClusterNode, clock: Clock, limits: Callable[[], LimitSettings]) -> None:
        self.node, self.link, self.clock, self.limits = node, node.link, clock, limits
        self.divisions: dict[tuple[str, int], SharedDivision] = {}
        self._scripts: dict[str, AsyncScript] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.link.on_up.append(self.reseed)

    def division(self, app: str, division: int, settings: LimitSettings, clock: Clock) -> SharedDivision:
        from proxy.cluster.queue import SharedDivision

        d = self.divisions[(app, division)] = SharedDivision(app, division, settings, clock, self)
        return d

    def keys(self, app: str, division: int) -> list[str]:
        tag = self.link.tag(app, division)
        return [self.link.key(tag, part) for part in ("w", "q", "qx", "seq")]

    # -- scripts ---------------------------------------------------------------------------------
    async def run(self, d: SharedDivision, name: str, *args: str | int | float) -> State:
        script = self._scripts.get(name)
        if script is None:
            if self.link.client is None:
                raise StoreDown(self.link.why)
            script = self._scripts[name] = self.link.script(getattr(lua, name))
        s = d.settings
        cap = s.minute_cap(d.division)
        policy = (d.policy_minute, d.policy_day, "" if cap is None else cap, s.pace, int(s.probe),
                  int(self.ticket_ttl * 1000), int(self.probe_lease * 1000), self.node.name)
        state = State.read(await self.link.run(script, d.keys, (*policy, *args)))
        self.link.saw_time(state.now)
        d.cache(state)
        return state

    def local(self, ms: float) -> float:
        """A time of the windows' clock (ms) on this node's clock (epoch seconds)."""
        return ms / 1000 - self.link.offset if ms >= 0 else math.inf

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except StoreDown as exc:
                log.debug("cluster windows: dropped after an answer (%s)", exc)
            except Exception:
                log.debug("cluster windows: failed after an answer", exc_info=True)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it started: never awaited
        return task

    # -- the server forgot -----------------------------------------------------------------------
    async def reseed(self, lost: bool) -> None:
        for d in list(self.divisions.values()):
            if lost and d.minute_start:
                seq = max((int(t.rpartition("|")[2]) for t in d.tickets), default=0)
                await self.run(d, "SEED", int(d.minute_start * 1000), d.minute_used, int(d.day_start * 1000),
                               d.day_used, d.learned_minute or "", d.learned_day or "",
                               int(d.paused_until * 1000), d.streak, int(d.known), seq)
            d.poke()

    # -- the shared view -------------------------------------------------------------------------
    async def view(self) -> list[dict[str, Any]]:
        from proxy.cluster.queue import SharedDivision

        pattern = self.link.key("{*}", "w")
        head, tail = len(self.link.key("{")), len("}:w")
        found: list[tuple[str, int]] = []
        cursor: Any = 0
        while True:
            cursor, keys = await self.link.command("SCAN", cursor, "MATCH", pattern, "COUNT", 500)
            for k in keys:
                app, _, number = (k.decode() if isinstance(k, bytes) else str(k))[head:-tail].rpartition("|")
                if number.isdigit():
                    found.append((app, int(number)))
            if int(cursor) == 0:
                break
        rows = []
        settings = self.limits()
        for app, div in sorted(set(found)):
            d = self.divisions.get((app, div)) or SharedDivision(app, div, settings, self.clock, self)
            s = await self.run(d, "PEEK")
            now = self.link.time()
            longest = max((now - w.since for w in d.waiters), default=0.0)
            rows.append({"app": app, "division": div, "minute": f"{s.mu}/{s.ml}", "today": f"{s.du}/{s.dl}",
                         "exact_left": f"{_fmt(d.exact_minute_remaining)}/{_fmt(d.exact_day_remaining)}",
                         "queue": s.queue, "queue_here": len(d.waiters), "longest_wait_s": round(longest, 1),
                         "paused_until": utc_text(s.pu / 1000) if s.pu > s.now else None,
                         "minute_resets_in_s": round((s.ms + 60_000 - s.now) / 1000, 1),
                         "day_resets_in_s": round((s.ds + 86_400_000 - s.now) / 1000, 1),
                         "paused_for_s": round((s.pu - s.now) / 1000, 1) if s.pu > s.now else None})
        return rows


def news(d: Window, headers: Mapping[str, str], now: float) -> bool:
    """Would Exact's headers change what the server knows, as far as ``d`` (the cache of its last reply)
    can tell? If not, no ``learn`` is sent: the forwarded call costs its reservation only."""
    m_limit = header_int(headers.get("X-RateLimit-Minutely-Limit"))
    m_left = header_int(headers.get("X-RateLimit-Minutely-Remaining"))
    d_limit = header_int(headers.get("X-RateLimit-Limit"))
    d_left = header_int(headers.get("X-RateLimit-Remaining"))
    if m_limit is not None and 0 < m_limit < 1_000_000 and m_limit != d.learned_minute:
        return True
    if d_limit is not None and d_limit > 0 and d_limit != d.learned_day:
        return True
    if m_left is not None and m_left >= 0:
        m_reset = header_int(headers.get("X-RateLimit-Minutely-Reset"))
        reset = m_reset / 1000 if m_reset is not None else d.minute_start + 60
        if abs(reset - (d.minute_start + 60)) <= 1.5:
            if d.minute_limit - m_left > d.minute_used:
                return True
        elif reset > now and m_left == 0:
            return True
    if d_left is not None and d_left >= 0 and d.day_limit - min(d_left, d.day_limit) > d.day_used:
        return True
    return d.streak > 0 and (m_left is not None or d_left is not None)


def _fmt(v: int | None) -> str:
    return "-" if v is None else str(v)
