"""The error book: one shared record of counted errors, upstream blocks and in-flight calls.

Contract
- ``ErrorBook.of(services)`` is the one book of an app (created on first use), shared by the filters
  ``error_budget`` (outer: cache, refusal, headers) and ``error_headroom`` (inner, just before forward).
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
from collections import deque
from collections.abc import Callable

from .window import ErrorWindows, Key, key_text, parse_key

COUNTS, BLOCKS = "error_counts", "error_blocks"


class ErrorBook:
    def __init__(self) -> None:
        self.windows = ErrorWindows(3600.0)
        self.blocks: dict[Key, float] = {}
        self.store = None
        self._inflight: dict[Key, int] = {}
        self._waiters: dict[Key, deque[asyncio.Future]] = {}

    @classmethod
    def of(cls, services) -> ErrorBook:
        book = getattr(services, "error_book", None)
        if book is None:
            book = cls()
            services.error_book = book
        return book

    # -- persistence ---------------------------------------------------------------------------------
    async def load(self, store, now: float, window: float) -> None:
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

    async def reserve(self, key: Key, budget: int, now: Callable[[], float]) -> int | None:
        """A place is taken (call ``release``): how many times it waited (0: at once). None: the counted
        errors reached the budget or Exact blocked the key; nothing is taken."""
        newcomer, waits = True, 0
        while True:
            used = self.count(key, now())
            if used >= budget or self.blocked_until(key, now()) is not None:
                return None
            if used + self.inflight(key) < budget and not (newcomer and self._waiters.get(key)):
                self._inflight[key] = self.inflight(key) + 1
                if not newcomer:
                    self._wake(key)  # there may be room for the next waiter too
                return waits
            newcomer, waits = False, waits + 1  # a woken waiter goes before anyone who arrived while it waited
            queue = self._waiters.setdefault(key, deque())
            fut = asyncio.get_running_loop().create_future()
            queue.append(fut)
            try:
                await fut
            finally:
                if fut in queue:
                    queue.remove(fut)
                if not queue and self._waiters.get(key) is queue:
                    del self._waiters[key]

    def release(self, key: Key) -> None:
        n = self.inflight(key) - 1
        if n > 0:
            self._inflight[key] = n
        else:
            self._inflight.pop(key, None)
        self._wake(key)

    def _wake(self, key: Key) -> None:
        """Every waiter of the key looks again, in the order they came (few wait: at most the budget
        is in flight, the rest wait here)."""
        for fut in self._waiters.get(key, ()):
            if not fut.done():
                fut.set_result(None)
