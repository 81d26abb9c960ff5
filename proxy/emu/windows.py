"""The emulator's own call-limit windows (independent of the proxy's limiter code).

Contract
- Per (app, division): a fixed window aligned to the clock minute (``floor(t/60)``) and a UTC day
  (``floor(t/86400)``), each with its own limit (config defaults, config overrides, ``set_limits``).
- ``take(app, division, now) -> (outcome, headers)``: outcome ``"ok"`` (the call is counted in both
  windows; headers are the six ``X-RateLimit-*`` with remaining *after* this call), ``"daily_429"`` (only the
  three daily headers) or ``"minutely_429"`` (only the three minutely headers). A refused call is not counted.
  The day is checked first: when both are exhausted the longer wait is the one reported.
- ``peek_headers`` gives the six headers without counting (for responses that are not counted).
- Resets are UTC epoch milliseconds: the next whole minute and the next 00:00 UTC.
"""

from __future__ import annotations

from .config import EmulatorConfig


class _Counter:
    __slots__ = ("minute", "minute_count", "day", "day_count")

    def __init__(self) -> None:
        self.minute = -1
        self.minute_count = 0
        self.day = -1
        self.day_count = 0

    def roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self.minute:
            self.minute, self.minute_count = minute, 0
        day = int(now // 86400)
        if day != self.day:
            self.day, self.day_count = day, 0


class Windows:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._counters: dict[tuple[str, int], _Counter] = {}
        self._limits: dict[tuple[str, int], tuple[int, int]] = {}
        self._overrides: dict[tuple[str, int], tuple[int | None, int | None]] = {}

    def set_limits(
        self, app: str, division: int, minutely: int | None = None, daily: int | None = None
    ) -> None:
        self._overrides[(app, int(division))] = (minutely, daily)
        self._limits.clear()

    def reset(self) -> None:
        self._counters.clear()
        self._overrides.clear()
        self._limits.clear()

    def limits_for(self, app: str, division: int) -> tuple[int, int]:
        key = (app, division)
        got = self._limits.get(key)
        if got is not None:
            return got
        minutely, daily = self.config.minutely_limit, self.config.daily_limit
        for o in self.config.limits:
            if (o.app is None or o.app == app) and (o.division is None or int(o.division) == division):
                minutely = o.minutely if o.minutely is not None else minutely
                daily = o.daily if o.daily is not None else daily
        m, d = self._overrides.get(key, (None, None))
        got = (m if m is not None else minutely, d if d is not None else daily)
        self._limits[key] = got
        return got

    def _counter(self, app: str, division: int, now: float) -> _Counter:
        c = self._counters.get((app, division))
        if c is None:
            c = self._counters[(app, division)] = _Counter()
        c.roll(now)
        return c

    def take(self, app: str, division: int, now: float) -> tuple[str, dict[str, str]]:
        minutely, daily = self.limits_for(app, division)
        c = self._counter(app, division, now)
        if c.day_count >= daily:
            return "daily_429", self._daily(c, daily)
        if c.minute_count >= minutely:
            return "minutely_429", self._minutely(c, minutely)
        c.minute_count += 1
        c.day_count += 1
        return "ok", {**self._minutely(c, minutely), **self._daily(c, daily)}

    def peek_headers(self, app: str, division: int, now: float) -> dict[str, str]:
        minutely, daily = self.limits_for(app, division)
        c = self._counter(app, division, now)
        return {**self._minutely(c, minutely), **self._daily(c, daily)}

    @staticmethod
    def _minutely(c: _Counter, limit: int) -> dict[str, str]:
        return {
            "X-RateLimit-Minutely-Limit": str(limit),
            "X-RateLimit-Minutely-Remaining": str(max(0, limit - c.minute_count)),
            "X-RateLimit-Minutely-Reset": str((c.minute + 1) * 60_000),
        }

    @staticmethod
    def _daily(c: _Counter, limit: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - c.day_count)),
            "X-RateLimit-Reset": str((c.day + 1) * 86_400_000),
        }

    @staticmethod
    def retry_after(outcome: str, now: float) -> int:
        if outcome == "daily_429":
            return max(1, int(-(-((now // 86400 + 1) * 86400 - now) // 1)))
        return max(1, int(-(-((now // 60 + 1) * 60 - now) // 1)))
