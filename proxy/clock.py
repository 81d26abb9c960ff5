"""Clocks: the one source of time for the proxy, the emulator and the tests.

Contract
- ``time()`` is wall-clock UTC epoch seconds (float). Exact's windows (clock minute, UTC day) and
  every epoch-millisecond header are computed from it.
- ``monotonic()`` only ever increases; use it for durations and deadlines.
- ``await sleep(seconds)`` waits that long *on this clock*.
- ``await sleep_until(t)`` waits until ``monotonic() >= t``.

Three implementations:
- ``SystemClock``: real time.
- ``ManualClock``: time stands still until a test calls ``advance()``/``set()``; sleepers wake when the
  clock passes their deadline, in deadline order. Minute and day windows are tested in milliseconds.
- ``ScaledClock``: real time sped up by a factor (the demo's "10-second minutes" is factor 6).

``utc_text(epoch)`` writes an epoch as ``2026-12-01T10:00:00Z``, the one form of time in log lines,
answers and the status page.

Nothing here is a limiter; the proxy and the emulator may both use it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, deadline: float) -> None: ...


class SystemClock:
    """Real time."""

    factor = 1.0

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        await self.sleep(deadline - self.monotonic())


class ScaledClock:
    """Real time multiplied by ``factor``, starting at ``start`` (epoch seconds, default now).

    With ``real_start`` (a wall-clock epoch) the clock is a pure function of the wall clock, so that
    several processes (the nodes of a cluster test, the emulator) given the same three numbers agree
    on every minute; ``from_text("factor,start,real_start")`` reads them (``EXACT_PROXY_CLOCK``)."""

    def __init__(self, factor: float, start: float | None = None, real_start: float | None = None) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = float(factor)
        self._wall = real_start is not None
        self._real0 = float(real_start) if real_start is not None else _time.monotonic()
        self._start = _time.time() if start is None else float(start)

    @classmethod
    def from_text(cls, text: str) -> ScaledClock:
        factor, start, real_start = (float(v) for v in text.split(","))
        return cls(factor, start, real_start)

    def text(self) -> str:
        """The three numbers that make the same clock in another process (wall-anchored only)."""
        return f"{self.factor},{self._start},{self._real0}"

    def monotonic(self) -> float:
        return ((_time.time() if self._wall else _time.monotonic()) - self._real0) * self.factor

    def time(self) -> float:
        return self._start + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    async def sleep_until(self, deadline: float) -> None:
        await self.sleep(deadline - self.monotonic())


class ManualClock:
    """A clock that moves only when told. ``time()`` starts at ``start`` (epoch seconds).

    ``monotonic()`` equals ``time()`` minus the start, so both move together. ``advance(s)`` moves the
    clock forward and wakes, in deadline order, every sleeper whose deadline has passed; it yields to
    the loop so woken tasks run before it returns.
    """

    factor = 1.0

    def __init__(self, start: float = 1_795_600_800.0) -> None:  # 2026-11-25T10:00:00Z
        self._start = float(start)
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._start + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks wait on this clock (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    async def advance(self, seconds: float) -> None:
        await self.set_monotonic(self._now + seconds)

    async def set_time(self, epoch: float) -> None:
        await self.set_monotonic(epoch - self._start)

    async def set_monotonic(self, target: float) -> None:
        if target < self._now:
            raise ValueError("a ManualClock never goes backwards")
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
                # let the woken task run before time moves on
                for _ in range(3):
                    await asyncio.sleep(0)
        self._now = target
        for _ in range(3):
            await asyncio.sleep(0)


def utc_text(epoch: float) -> str:
    """``epoch`` (UTC seconds) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(epoch))
