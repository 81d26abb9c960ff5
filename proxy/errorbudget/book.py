"""The error book: one shared record of counted errors, upstream blocks and in-flight calls.

Contract
- ``services.error_book`` is the one book of an app (made by ``Services`` before the filters), shared by
  the filters ``error_budget`` (outer: cache, refusal, headers) and ``error_headroom`` (inner, just
  before forward), and the token broker's own calls (``proxy.tokens.endpoint``).
- ``count(key, now)`` / ``add(key, now)`` / ``reset_at(key, now)``: the rolling window
  (``window.ErrorWindows``); ``add`` also writes the key's times to the store (namespace ``error_counts``).
- **Reserve before forward.** ``await reserve(key, budget, now_fn)`` admits a call to Exact only while
  ``counted + in flight < budget``, so that even if every call in flight comes back an error, the
  budget is never passed. It waits (in arrival order) while the room is taken by calls in flight, and returns None
  as soon as the counted errors alone reach the budget. ``release(key)`` gives the place back (always,
  in a ``finally``). A cancelled waiter takes nothing.
- ``block(key, until)`` / ``blocked_until(key, now)``: Exact's own block, persisted in ``error_blocks``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.errorbudget.window import ErrorWindows, Key, key_text, parse_key

if TYPE_CHECKING:
    from proxy.store.base import Store

COUNTS, BLOCKS = "error_counts", "error_blocks"


class ErrorBook:
    def __init__(self) -> None:
        self.windows = ErrorWindows(3600.0)
        self.blocks: dict[Key, float] = {}
        self.store: Store | None = None
        self._inflight: dict[Key, int] = {}
        self._waiters: dict[Key, list[_Waiter]] = {}

    # -- persistence ---------------------------------------------------------------------------------
    async def load(self, store: Store, now: float, window: float) -> None:
        self.store = store
        self.windows.window = window
        for text, times in (await store.load(COUNTS)).items():
            key = parse_key(text)
            if key is not None and isinstance(times, list):
                self.windows.restore(key, [float(t) for t in times if isinstance(t, int | float)], now)
        for text, until in (await store.load(BLOCKS)).items():
            key = parse_key(text)
            if key is not None and isinstance(until, int | float) and until > now:
                self.blocks[key] = float(until)

    # -- counts --------------------------------------------------------------------------------------
    def clean(self, key: Key) -> bool:
        """Nothing is counted or blocked for the key (the common case: no window to prune)."""
        return key not in self.windows and key not in self.blocks

    def count(self, key: Key, now: float) -> int:
        return self.windows.count(key, now)

    def reset_at(self, key: Key, now: float) -> float:
        return self.windows.reset_at(key, now)

    def add(self, key: Key, now: float) -> int:
        n = self.windows.add(key, now)
        if self.store is not None:
            self.store.put(COUNTS, key_text(key), self.windows.times(key))
        self._wake(key)  # waiters re-check: the budget may now be spent
        return n

    def refusal(self, key: Key, budget: int, now: float) -> tuple[str, float] | None:
        """Why the key is not forwarded now, and until when: ``("blocked", until)`` while Exact's block
        lasts, ``("budget", reset_at)`` while the counted errors reach ``budget``; None otherwise."""
        if self.clean(key):
            return None
        until = self.blocked_until(key, now)
        if until is not None:
            return "blocked", until
        if self.count(key, now) >= budget:
            return "budget", self.reset_at(key, now)
        return None

    # -- blocks --------------------------------------------------------------------------------------
    def blocked_until(self, key: Key, now: float) -> float | None:
        until = self.blocks.get(key)
        if until is None:
            return None
        if until <= now:
            del self.blocks[key]
            if self.store is not None:
                self.store.delete(BLOCKS, key_text(key))
            return None
        return until

    def block(self, key: Key, until: float) -> None:
        self.blocks[key] = until
        if self.store is not None:
            self.store.put(BLOCKS, key_text(key), until)
        self._wake(key)

    # -- reserve before forward ----------------------------------------------------------------------
    def inflight(self, key: Key) -> int:
        return self._inflight.get(key, 0)

    def reserve_now(self, key: Key, budget: int, now: float) -> bool:
        """Take a place if one is free at once and nobody waits for one (the common case, without a
        coroutine). False: nothing was taken; ``reserve`` decides."""
        if key in self._waiters:
            return False
        used = 0
        if not self.clean(key):
            if self.blocked_until(key, now) is not None:
                return False
            used = self.count(key, now)
        inflight = self._inflight.get(key, 0)
        if used + inflight >= budget:
            return False
        self._inflight[key] = inflight + 1
        return True

    async def reserve(self, key: Key, budget: int, now: Callable[[], float]) -> int | None:
        """A place is taken (call ``release``): how many times it waited (0: at once). None: the counted
        errors reached the budget or Exact blocked the key; nothing is taken."""
        waiter: _Waiter | None = None
        taken = False
        try:
            while True:
                t = now()
                used = self.count(key, t)
                if used >= budget or self.blocked_until(key, t) is not None:
                    return None
                inflight = self._inflight.get(key, 0)
                queue = self._waiters.get(key)
                # A newcomer never passes someone already waiting (arrival order).
                if used + inflight < budget and (waiter is not None or not queue):
                    self._inflight[key] = inflight + 1
                    taken = True
                    if waiter is not None and queue and used + inflight + 1 < budget:  # else no room left
                        woken = sum(1 for w in queue if w is not waiter and w.fut is not None and w.fut.done())
                        if used + inflight + 1 + woken < budget:
                            self._wake_next(key, waiter)  # room for one more waiter too
                    return 0 if waiter is None else waiter.waits
                if waiter is None:
                    waiter = _Waiter()
                    self._waiters.setdefault(key, []).append(waiter)  # keeps its place until it leaves
                waiter.waits += 1
                waiter.fut = asyncio.get_running_loop().create_future()
                await waiter.fut
        finally:
            if waiter is not None:
                queue = self._waiters.get(key)
                if queue is not None:
                    if waiter in queue:
                        queue.remove(waiter)
                    if not queue:
                        del self._waiters[key]
                fut = waiter.fut
                if not taken and fut is not None and fut.done() and not fut.cancelled():
                    # Woken but leaving without a place (cancelled or refused): the wake-up passes
                    # on, so a freed place is never left unused while someone waits.
                    self._wake_next(key)

    def release(self, key: Key) -> None:
        n = self.inflight(key) - 1
        if n > 0:
            self._inflight[key] = n
        else:
            self._inflight.pop(key, None)
        self._wake_next(key)  # one place freed: one waiter looks

    def _wake_next(self, key: Key, skip: _Waiter | None = None) -> None:
        """The first waiter that is not already woken looks again (a freed place wakes one, not all)."""
        for waiter in self._waiters.get(key, ()):
            if waiter is not skip and waiter.fut is not None and not waiter.fut.done():
                waiter.fut.set_result(None)
                return

    def _wake(self, key: Key) -> None:
        """Every waiter of the key looks again, in the order they came: the counted errors or a block
        may have ended the wait for all of them."""
        for waiter in self._waiters.get(key, ()):
            if waiter.fut is not None and not waiter.fut.done():
                waiter.fut.set_result(None)


class _Waiter:
    __slots__ = ("fut", "waits")

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] | None = None
        self.waits = 0
