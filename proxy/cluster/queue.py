"""One app and division in cluster mode: the node's cache of the shared windows, and its part of the
cluster-wide ticket queue in front of them.

Contract (the ``Division`` API that ``call_budget`` drives; times are ``clock.time()`` epoch seconds)
- ``acquire_now`` is always False (nothing is decided without the server); ``await acquire(rank,
  deadline, buckets)`` reserves on the server in one round trip when nobody waits anywhere, and
  otherwise takes a ticket in the division's global queue (priority first, then arrival order across
  all nodes). The node's pump grants its tickets with one ``admit`` per look: at the minute boundary,
  the pause end or the pace time the server named, when something changed here, and every
  ``SharedWindows.poll`` seconds (real time), which is also the tickets' heartbeat. A dead node's tickets
  expire after ``ticket_ttl``; a dead node's probe after ``probe_lease``.
- A cancelled waiter (the tool went away) leaves the queue (ZREM) and consumes nothing; if it was
  admitted as it went away, the reservation is given back.
- Fail closed: ``Refusal("down")`` when the server cannot be reached at admission (nothing is sent);
  a queued call keeps waiting while the server is down and is refused "down" at its deadline if it
  is still down then.
- ``answered`` / ``unanswered`` / ``upstream_429`` update the cache at once and tell the server in the
  background (``SharedWindows.spawn``): ``learn`` only when Exact's headers say something the server
  may not know, ``release`` for a call never sent (same minute only) or a probe that got no answer,
  ``pause`` at once for a 429 (the next admission of this division waits for it, other nodes see it
  on their next call). The cache (the last reply) serves the status page, estimates and refusals.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.clock import Clock
from proxy.cluster.link import RETRY_AFTER, StoreDown
from proxy.cluster.windows import news
from proxy.exact.ratelimit import header_int, retry_after_seconds
from proxy.limits.division import Division, Refusal, Waiter
from proxy.limits.settings import LimitSettings
from proxy.limits.window import Buckets

if TYPE_CHECKING:
    from proxy.cluster.windows import SharedWindows, State

# the grant of the call this task forwards: (minute ms it was reserved in, it is the probe)
_GRANT: ContextVar[tuple[int, bool] | None] = ContextVar("exact_proxy_shared_grant", default=None)


@dataclass
class Ticket:
    id: str
    waiter: Waiter
    score: int
    minute: int = 0
    probe: bool = False


class SharedDivision(Division):
    def __init__(self, app: str, division: int, settings: LimitSettings, clock: Clock,
                 windows: SharedWindows) -> None:
        super().__init__(app, division, settings, clock)
        self.windows = windows
        self.keys = windows.keys(app, division)
        self.tickets: dict[str, Ticket] = {}
        self.leaving: set[str] = set()
        self.urgent: asyncio.Task[None] | None = None  # a 429 on its way to the server
        self.queue_total = 0

    def cache(self, s: State) -> None:
        self.minute_start, self.minute_used = s.ms / 1000, s.mu
        self.day_start, self.day_used = s.ds / 1000, s.du
        self.minute_limit, self.day_limit = s.ml, s.dl
        self.learned_minute = s.lm if s.lm > 0 else None
        self.learned_day = s.ld if s.ld > 0 else None
        self.paused_until = self.windows.local(s.pu) if s.pu > 0 else 0.0
        self.streak, self.known, self.queue_total = s.st, bool(s.kn), s.queue
        self.pace_tail = int(s.ml * self.settings.pace)

    # -- admission -------------------------------------------------------------------------------
    def acquire_now(self, buckets: Buckets = ()) -> bool:
        return False

    async def acquire(self, rank: int, deadline: float, buckets: Buckets = ()) -> float | Refusal:
        now = self.clock.time()
        if self.urgent is not None and not self.urgent.done():
            await asyncio.wait([self.urgent])  # a 429 seen here is on the server before the next call
        if buckets:
            refused = await self._take_buckets(deadline, buckets)
            if refused is not None:
                return refused
        try:
            got = await self._admit(rank, deadline, buckets, now)
        except BaseException:
            self._give_buckets(buckets)
            raise
        if isinstance(got, Refusal):
            self._give_buckets(buckets)
        return got

    async def _take_buckets(self, deadline: float, buckets: Buckets) -> Refusal | None:
        """Node-local token buckets: wait here until each has room, then take them."""
        while True:
            wait = max((b.free_in() for b in buckets if not b.has_capacity()), default=0.0)
            now = self.clock.time()
            if wait <= 0:
                for b in buckets:
                    b.take()
                return None
            if now + wait > deadline:
                return self.refusal("max_wait", now + wait, now)
            await self.clock.sleep(wait)

    @staticmethod
    def _give_buckets(buckets: Buckets) -> None:
        for b in buckets:
            b.give_back()

    def _down(self, now: float) -> Refusal:
        return Refusal("down", now + RETRY_AFTER, {"Retry-After": str(RETRY_AFTER)})

    async def _admit(self, rank: int, deadline: float, buckets: Buckets, now: float) -> float | Refusal:
        try:
            s = await self.windows.run(self, "RESERVE")
        except StoreDown:
            return self._down(now)
        if not s.reason:
            _GRANT.set((s.ms, bool(s.probe)))
            return 0.0
        if s.reason == "daily":
            return self.refusal("daily", self.windows.local(s.until), now)
        est = self.estimate(now, s.priority_queue if rank > 0 else s.queue)
        if s.reason in ("paused", "pace", "minute") and s.until >= 0:
            est = max(est, self.windows.local(s.until) - now)
        if now + est > deadline:
            return self.refusal("max_wait", now + est if math.isfinite(est) else deadline, now)
        fut: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
        waiter = Waiter((-rank, 0), fut, deadline, tuple(buckets), now)
        enqueue = asyncio.ensure_future(self._enqueue(rank, waiter))
        try:
            ticket = await asyncio.shield(enqueue)
        except asyncio.CancelledError:  # the tool went away while its ticket was being drawn
            enqueue.add_done_callback(self._abandon_drawn)
            raise
        if ticket is None:
            return self._down(now)
        self._ensure_pump()
        try:
            result = await fut
        except asyncio.CancelledError:
            self._abandon(ticket)
            raise
        if result is not None:
            return result
        _GRANT.set((ticket.minute, ticket.probe))
        return self.clock.time() - now

    async def _enqueue(self, rank: int, waiter: Waiter) -> Ticket | None:
        try:
            s = await self.windows.run(self, "ADMIT", rank, 0)
        except StoreDown:
            return None
        ticket = self.tickets[s.ticket] = Ticket(s.ticket, waiter, s.score)
        self._take(s)
        return ticket

    def _abandon_drawn(self, task: asyncio.Future[Ticket | None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._abandon(task.result())

    def _abandon(self, ticket: Ticket | None) -> None:
        if ticket is None:
            return
        fut = ticket.waiter.fut
        if fut.done() and not fut.cancelled() and fut.result() is None:
            self._give_back(ticket.minute, ticket.probe)  # admitted as the tool went away: never sent
            return
        fut.cancel()
        if self.tickets.pop(ticket.id, None) is not None:
            self.leaving.add(ticket.id)
            self._sync()
        if self.pump is None or self.pump.done():
            self.windows.spawn(self._leave())
        else:
            self.poke()

    def _take(self, s: State) -> None:
        """A reply's grants go to their waiters; a spent day refuses them all."""
        for t in s.granted:
            ticket = self.tickets.pop(t, None)
            if ticket is None or ticket.waiter.fut.done():
                self._give_back(s.ms, bool(s.probe))
                continue
            ticket.minute, ticket.probe = s.ms, bool(s.probe)
            ticket.waiter.fut.set_result(None)
        if s.reason == "daily":
            now = self.clock.time()
            for t in list(self.tickets):
                self._drop(t, self.refusal("daily", self.windows.local(s.until), now))
        self._sync()

    def _drop(self, t: str, result: Refusal | None = None) -> None:
        ticket = self.tickets.pop(t)
        self.leaving.add(t)
        if result is not None and not ticket.waiter.fut.done():
            ticket.waiter.fut.set_result(result)

    def _sync(self) -> None:
        self.waiters = [t.waiter for t in self.tickets.values()]

    def _give_back(self, minute: int, probe: bool, sent: bool = False) -> None:
        if not sent:
            self.minute_used = max(0, self.minute_used - 1)
            self.day_used = max(0, self.day_used - 1)
        self.windows.spawn(self._tell("RELEASE", minute, 0 if sent else 1, int(probe)))

    async def _tell(self, script: str, *args: str | int | float) -> None:
        await self.windows.run(self, script, *args)
        self.poke()

    async def _leave(self) -> None:
        leaving = list(self.leaving)
        self.leaving.clear()
        try:
            await self.windows.run(self, "ADMIT", "", len(leaving), *leaving)
        except StoreDown:
            self.leaving.update(leaving)
            raise

    # -- the pump --------------------------------------------------------------------------------
    def poke(self) -> None:
        if self.changed is not None:
            self.changed.set()

    def wake(self) -> None:
        """The local cache changed: nothing to do, the server decides (``poke`` looks again)."""

    def apply(self, settings: LimitSettings) -> None:
        super().apply(settings)
        self.poke()

    def _ensure_pump(self) -> None:
        if self.pump is None or self.pump.done():
            self.changed = asyncio.Event()
            self.pump = asyncio.get_running_loop().create_task(self._run_pump(), name=f"shared-{self.division}")
        else:
            self.poke()

    async def _run_pump(self) -> None:
        try:
            await self._pump()
        finally:
            if self.leaving and not self.tickets:
                self.windows.spawn(self._leave())

    async def _pump(self) -> None:
        while self.tickets:
            now = self.clock.time()
            for t, ticket in list(self.tickets.items()):
                if ticket.waiter.fut.done():
                    self._drop(t)
                elif ticket.waiter.deadline <= now:
                    retry = max(self.paused_until, self.minute_start + 60)
                    self._drop(t, self.refusal("max_wait", retry if retry > now else now + 1, now)
                               if self.windows.link.up else self._down(now))
            self._sync()
            if not self.tickets:
                break
            leaving = list(self.leaving)
            self.leaving.clear()
            pairs: list[Any] = [v for t in self.tickets.values() for v in (t.id, t.score)]
            wake = math.inf
            try:
                s = await self.windows.run(self, "ADMIT", "", len(leaving), *leaving, *pairs)
            except StoreDown:
                self.leaving.update(leaving)
            else:
                self._take(s)
                if s.reason in ("minute", "paused", "pace") and s.until >= 0:
                    wake = self.windows.local(s.until)
            if not self.tickets:
                break
            await self._wait(min(wake, min(t.waiter.deadline for t in self.tickets.values())))

    async def _wait(self, until: float) -> None:
        changed = self.changed
        assert changed is not None  # the pump created it
        changed.clear()
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(changed.wait()),
                                            asyncio.ensure_future(asyncio.sleep(self.windows.poll))]
        left = until - self.clock.time()
        if math.isfinite(until) and left > 0:
            tasks.append(asyncio.ensure_future(self.clock.sleep(left)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    # -- what Exact says -------------------------------------------------------------------------
    def answered(self, headers: Mapping[str, str], learn: bool) -> None:
        now = self.clock.time()
        self.roll(now)
        grant = _GRANT.get()
        tell = (grant is not None and grant[1]) or not self.known or (learn and news(self, headers, now))
        super().answered(headers, learn)
        if tell:
            h = [header_int(headers.get(f"X-RateLimit-{name}")) for name in
                 ("Minutely-Limit", "Minutely-Remaining", "Minutely-Reset", "Limit", "Remaining")]
            self.windows.spawn(self._tell("LEARN", int(learn), *("" if v is None else v for v in h)))

    def unanswered(self, buckets: Buckets = (), sent: bool = True) -> None:
        grant = _GRANT.get()
        if not sent:
            self._give_buckets(buckets)
        if grant is not None and (not sent or grant[1]):
            self._give_back(grant[0], grant[1], sent)

    def upstream_429(self, headers: Mapping[str, str], pause_base: float, pause_cap: float) -> float:
        until = super().upstream_429(headers, pause_base, pause_cap)
        now = self.clock.time()
        m_reset = header_int(headers.get("X-RateLimit-Minutely-Reset"))
        d_reset = header_int(headers.get("X-RateLimit-Reset"))
        if headers.get("X-RateLimit-Remaining", "").strip() != "0":
            d_reset = None
        ra = retry_after_seconds(headers.get("Retry-After"), now)
        self.urgent = self.windows.spawn(self.windows.run(
            self, "PAUSE", "" if m_reset is None else m_reset, "" if d_reset is None else d_reset,
            "" if ra is None else math.ceil(ra), pause_base, pause_cap))
        return until
