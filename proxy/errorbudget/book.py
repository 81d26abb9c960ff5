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
- ``await take(key, budget, now_fn, probe)`` / ``done(taken, now, error)``: the same reservation as one
  object (``Taken``): ``take`` is ``reserve_now`` or ``reserve``, ``done`` is ``release`` then, with
  ``error``, ``add``. None from ``take``: refused, nothing taken.
- **Cluster mode** (``share(shared)``, by the ``error_budget`` filter's load): the decisions are the
  shared server's (``proxy.cluster.errors``): ``take`` asks it (and may find a shared negative-cache
  answer for ``probe``: ``Taken.cached``, nothing taken); ``done``, ``block`` and the legacy ``release``
  and ``add`` tell it in the background. The book's windows and blocks then hold the server's last
  reply per key (``seen``), which ``count``, ``refusal`` and the headers read; nothing goes to the
  store. ``take`` and ``reserve`` raise ``StoreUnreachable`` when the server cannot be asked: the caller
  answers 503 and sends nothing. Without ``share`` nothing of this runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxy.errorbudget.negative_cache import Cached, RequestKey
from proxy.errorbudget.window import ErrorWindows, Key, key_text, parse_key

if TYPE_CHECKING:
    from proxy.store.base import Store

COUNTS, BLOCKS = "error_counts", "error_blocks"


class StoreUnreachable(Exception):
    """Cluster mode: the shared server did not answer, so nothing was decided and nothing may be sent."""


@dataclass(slots=True)
class Taken:
    """A place taken by ``ErrorBook.take`` (give it back with ``done``)."""

    key: Key
    waits: int = 0              # how often it waited for room (0: at once)
    inflight: int = 1           # calls in flight on the key when it was taken, itself included
    lease: str = ""             # cluster mode: its member in the shared in-flight set
    cached: Cached | None = None  # cluster mode: the shared negative cache answered; nothing is taken


class Shared(Protocol):
    """The shared decisions of cluster mode (``proxy.cluster.errors.SharedErrors``)."""

    async def take(self, book: ErrorBook, key: Key, budget: int, probe: RequestKey | None) -> Taken | None: ...

    def done(self, taken: Taken, error_at: float | None) -> None: ...

    def block(self, key: Key, until: float) -> None: ...

    def close(self) -> None: ...


class ErrorBook:
    def __init__(self) -> None:
        self.windows = ErrorWindows(3600.0)
        self.blocks: dict[Key, float] = {}
        self.store: Store | None = None
        self._inflight: dict[Key, int] = {}
        self._waiters: dict[Key, list[_Waiter]] = {}
        self.shared: Shared | None = None
        self._held: dict[Key, list[Taken]] = {}       # cluster mode, legacy reserve/release
        self._released: list[_Released] = []          # told to the server at the loop's next turn

    def share(self, shared: Shared) -> None:
        """Cluster mode: from now on the shared server decides (see the contract)."""
        self.shared = shared

    def seen(self, key: Key, times: list[float], blocked: float | None, now: float) -> None:
        """Cluster mode: the server's counted errors and block of the key, as its last reply said."""
        self.windows.replace(key, times, now)
        if blocked is not None and blocked > max(now, self.blocks.get(key, 0.0)):
            self.blocks[key] = blocked

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
        if self.shared is not None:
            self._shared_add(key, now)
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
        if self.shared is not None:
            self.shared.block(key, until)
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
        if key in self._waiters or self.shared is not None:
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
        if self.shared is not None:
            place = await self.shared.take(self, key, budget, None)
            if place is None:
                return None
            self._held.setdefault(key, []).append(place)
            return place.waits
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
        if self.shared is not None:
            self._shared_release(key)
            return
        n = self.inflight(key) - 1
        if n > 0:
            self._inflight[key] = n
        else:
            self._inflight.pop(key, None)
        self._wake_next(key)  # one place freed: one waiter looks

    # -- one object per reservation ------------------------------------------------------------------
    async def take(self, key: Key, budget: int, now: Callable[[], float],
                   probe: RequestKey | None = None) -> Taken | None:
        """``reserve_now`` or ``reserve`` as a ``Taken``; None: refused, nothing taken. Cluster mode: the
        server decides, and ``probe`` (the request key of a GET) may find a shared negative-cache answer."""
        if self.shared is not None:
            return await self.shared.take(self, key, budget, probe)
        if self.reserve_now(key, budget, now()):
            return Taken(key, 0, self.inflight(key))
        waits = await self.reserve(key, budget, now)
        return None if waits is None else Taken(key, waits, self.inflight(key))

    def done(self, taken: Taken, now: float, error: bool) -> int:
        """The place is given back; with ``error`` Exact counted the answer: the key's count then."""
        if self.shared is not None:
            if taken.cached is None:
                self.shared.done(taken, now if error else None)
            return self.windows.add(taken.key, now) if error else 0
        self.release(taken.key)
        return self.add(taken.key, now) if error else 0

    # -- cluster mode, for callers of reserve/release/add (the token endpoint) -----------------------
    def _shared_release(self, key: Key) -> None:
        held = self._held.get(key)
        if not held:
            return
        taken = held.pop()
        if not held:
            del self._held[key]
        self._released.append(_Released(taken))
        if len(self._released) == 1:  # an add() right after, in the same turn, rides on this release
            asyncio.get_running_loop().call_soon(self._settle)

    def _shared_add(self, key: Key, now: float) -> None:
        for item in self._released:
            if item.taken.key == key and item.error_at is None:
                item.error_at = now
                return
        assert self.shared is not None
        self.shared.done(Taken(key, lease=""), now)  # an error without a place of its own

    def _settle(self) -> None:
        released, self._released = self._released, []
        for item in released:
            if self.shared is not None:
                self.shared.done(item.taken, item.error_at)

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


@dataclass(slots=True)
class _Released:
    taken: Taken
    error_at: float | None = None


class _Waiter:
    __slots__ = ("fut", "waits")

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] | None = None
        self.waits = 0
