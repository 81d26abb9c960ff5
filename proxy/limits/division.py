"""One app and division: its windows (``proxy.limits.window``) and the queue in front of them.

Contract (all times are ``clock.time()`` epoch seconds):
- ``acquire_now`` / ``acquire`` reserve one call in the windows before the request is forwarded
  (reserve-before-forward), so under any concurrency no more calls are sent in a window than it allows.
- **Queue.** Requests that cannot go now wait in one FIFO per division; a higher ``rank`` (a priority
  rule) goes ahead. A pump admits waiters as capacity frees (``wake``); a waiter held back only by its
  own token bucket keeps its place while later ones with capacity pass. A cancelled waiter (the tool
  went away) leaves the queue and consumes nothing. With ``turns`` set, all pumps together release at
  most so many waiters per event-loop iteration (``proxy.limits.turns``).
- **Bounded waits.** ``acquire`` answers ``Refusal`` at once when the daily budget is spent or the
  estimated wait exceeds the deadline, and later when a waiter's deadline passes in the queue.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from proxy.clock import Clock
from proxy.exact.ratelimit import retry_after_seconds
from proxy.limits.settings import LimitSettings
from proxy.limits.turns import Turns
from proxy.limits.window import Buckets, Meter, Refusal, Window

__all__ = ["Division", "Refusal", "Waiter", "retry_after_seconds"]

_seq = itertools.count()


@dataclass(order=True)
class Waiter:
    sort_key: tuple[int, int]               # (-rank, arrival): a higher rank first, then in order
    fut: asyncio.Future[Refusal | None] = field(compare=False)  # None: admitted (its call is reserved)
    deadline: float = field(compare=False)
    buckets: tuple[Meter, ...] = field(compare=False)
    since: float = field(compare=False)



class Division(Window):
    def __init__(self, app: str, division: int, settings: LimitSettings, clock: Clock) -> None:
        super().__init__(app, division, settings, clock)
        # the queue exists only while someone waits: an idle division is one object for the GC to walk
        self.waiters: list[Waiter] | tuple[()] = ()
        self.changed: asyncio.Event | None = None
        self.pump: asyncio.Task[None] | None = None
        self.turns: Turns | None = None  # shared with every division: releases per loop iteration
    # -- admission -----------------------------------------------------------------------------------
    def acquire_now(self, buckets: Buckets = ()) -> bool:
        """Reserve a call if it can go at once (nobody waits, every window has room): the common case,
        without a coroutine. False: nothing was reserved; ``acquire`` decides."""
        if self.waiters:
            return False
        if self.blocked_until(self.clock.time(), buckets)[0] is None:
            self.reserve(buckets)
            return True
        return False

    async def acquire(self, rank: int, deadline: float, buckets: Buckets = ()) -> float | Refusal:
        """Reserve a call; returns the seconds waited, or a ``Refusal``."""
        now = self.clock.time()
        reason, until = self.blocked_until(now, buckets)
        if reason is None and not self.waiters:
            self.reserve(buckets)
            return 0.0
        if reason == "daily":
            return self.refusal("daily", until, now)
        ahead = sum(1 for w in self.waiters if w.sort_key[0] <= -rank)
        est = self.estimate(now, ahead)
        if reason == "bucket":
            est = max(est, until - now)
        if now + est > deadline:
            return self.refusal("max_wait", now + est if math.isfinite(est) else deadline, now)
        fut: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
        waiter = Waiter((-rank, next(_seq)), fut, deadline, tuple(buckets), now)
        if not isinstance(self.waiters, list):
            self.waiters = []
        bisect.insort(self.waiters, waiter)
        self._ensure_pump()
        try:
            result = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result() is None:
                self.release(waiter.buckets)  # admitted as the tool went away: never sent, give it back
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            raise
        if result is None:
            return self.clock.time() - now
        return result

    def wake(self) -> None:
        """Something changed (capacity, a pause, the probe): the pump, if one runs, looks again."""
        if self.changed is not None:
            self.changed.set()

    def _ensure_pump(self) -> None:
        if self.pump is None or self.pump.done():
            self.changed = asyncio.Event()
            self.pump = asyncio.get_running_loop().create_task(self._run_pump(), name=f"queue-{self.division}")
        else:
            self.wake()

    async def _run_pump(self) -> None:
        try:
            await self._pump()
        finally:
            if not self.waiters:  # the queue is gone until someone waits again
                self.waiters, self.changed, self.pump = (), None, None

    async def _pump(self) -> None:
        while self.waiters:
            now = self.clock.time()
            self.waiters = [w for w in self.waiters if not w.fut.done()]
            for w in [w for w in self.waiters if w.deadline <= now]:
                self.waiters.remove(w)
                _, until = self.blocked_until(now, w.buckets)  # when it could have gone: the reset to report
                w.fut.set_result(self.refusal("max_wait", until if now < until < math.inf else now + 1, now))
            if not self.waiters:
                break
            wake = math.inf
            remaining: list[Waiter] = []
            window_full = out_of_turns = False
            turns = self.turns
            for w in self.waiters:  # admit everyone who can go now, in order, in one pass
                if window_full or out_of_turns:
                    remaining.append(w)
                    continue
                reason, until = self.blocked_until(now, w.buckets)
                if reason is None:
                    if turns is not None and not turns.take():
                        out_of_turns = True  # the rest of this pass waits for a later loop iteration
                        remaining.append(w)
                        continue
                    self.reserve(w.buckets)
                    w.fut.set_result(None)
                    continue
                if reason == "daily":
                    w.fut.set_result(self.refusal("daily", until, now))
                    continue
                remaining.append(w)
                wake = min(wake, until)
                if reason != "bucket":
                    window_full = True  # the window is shared: nobody behind can go either
            self.waiters = remaining
            if not self.waiters:
                break
            if out_of_turns:
                await self.turns.wait()  # type: ignore[union-attr]
                continue
            wake = min(wake, min(w.deadline for w in self.waiters))
            await self._wait(wake)

    async def _wait(self, until: float) -> None:
        changed = self.changed
        assert changed is not None  # the pump created it
        changed.clear()
        event = asyncio.ensure_future(changed.wait())
        tasks: list[asyncio.Future[Any]] = [event]
        if math.isfinite(until):
            tasks.append(asyncio.ensure_future(self.clock.sleep(max(0.0, until - self.clock.time()))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

