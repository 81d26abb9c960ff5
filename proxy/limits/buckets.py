"""Token buckets on the injected clock, with aiolimiter as the meter.

``ClockLimiter(rate, per, burst, clock)`` is aiolimiter's ``AsyncLimiter`` (a leaky bucket: ``burst``
calls at once, refilled at ``rate`` per ``per`` seconds) whose time comes from the proxy's clock, so
minute-scale buckets are tested in milliseconds. The proxy's own queue does the waiting: it asks
``has_capacity()``, ``take()``s one unit when it admits a request, ``give_back()`` when that request
was never sent, and ``free_in()`` for how long until the next unit is free.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from proxy.clock import Clock


class ClockLimiter(AsyncLimiter):
    def __init__(self, rate: float, per: float, burst: int, clock: Clock) -> None:
        # aiolimiter: max_rate units per time_period, bucket size max_rate. Burst B refilled at R/P per
        # second is max_rate=B over time_period=B*P/R.
        super().__init__(max_rate=burst, time_period=burst * per / rate)
        self.clock = clock

    def _leak(self) -> None:  # aiolimiter's own, on our clock instead of the event loop's
        now = self.clock.monotonic()
        if self._level:
            self._level = max(self._level - (now - self._last_check) * self._rate_per_sec, 0)
        self._last_check = now

    def take(self) -> None:
        self._leak()
        self._level += 1

    def give_back(self) -> None:
        self._level = max(0.0, self._level - 1)

    def free_in(self) -> float:
        self._leak()
        needed = self._level + 1 - self.max_rate
        return max(0.0, needed / self._rate_per_sec)
