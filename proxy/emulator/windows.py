"""The emulator's own call limits (shares nothing with the proxy's limit code, on purpose).

Contract: ``CallLimits(config, clock)``. ``admit(app, division)`` either counts the call and returns
``(None, headers)`` with the six ``X-RateLimit-*`` headers as Exact sends them, or returns
``(kind, headers)`` with kind ``daily`` or ``minutely`` and only the headers of the limit that was hit.
The minute is the clock minute; the day starts at 00:00 UTC; resets are epoch milliseconds.
``admit`` takes the app in its normal form (it comes from a token); ``set_limits`` and ``used`` take
any spelling of it (``identity.normal_client_id``).
"""

from __future__ import annotations

import math

from proxy.emulator.identity import normal_client_id


class CallLimits:
    def __init__(self, config, clock) -> None:
        self.config = config
        self.clock = clock
        self._counts: dict[tuple[str, int], list[float]] = {}  # [minute_start, minute_used, day_start, day_used]
        self._overrides: dict[tuple[str, int], tuple[int | None, int | None]] = {}

    def set_limits(self, app: str, division: int, minutely: int | None = None, daily: int | None = None) -> None:
        self._overrides[(normal_client_id(app), division)] = (minutely, daily)

    def reset(self) -> None:
        self._counts.clear()

    def limits(self, app: str, division: int) -> tuple[int, int]:
        minutely, daily = self.config.limits_for(app, division)
        o = self._overrides.get((app, division))
        if o:
            minutely = o[0] if o[0] is not None else minutely
            daily = o[1] if o[1] is not None else daily
        return minutely, daily

    def admit(self, app: str, division: int) -> tuple[str | None, dict[str, str]]:
        now = self.clock.time()
        minute = math.floor(now / 60) * 60
        day = math.floor(now / 86400) * 86400
        c = self._counts.get((app, division))
        if c is None:
            c = self._counts[(app, division)] = [minute, 0, day, 0]
        if c[0] != minute:
            c[0], c[1] = minute, 0
        if c[2] != day:
            c[2], c[3] = day, 0
        m_limit, d_limit = self.limits(app, division)
        m_reset, d_reset = str(int((minute + 60) * 1000)), str(int((day + 86400) * 1000))
        if c[3] >= d_limit:
            return "daily", self._retry({"X-RateLimit-Limit": str(d_limit), "X-RateLimit-Remaining": "0",
                                         "X-RateLimit-Reset": d_reset}, day + 86400 - now)
        if c[1] >= m_limit:
            return "minutely", self._retry({"X-RateLimit-Minutely-Limit": str(m_limit),
                                            "X-RateLimit-Minutely-Remaining": "0",
                                            "X-RateLimit-Minutely-Reset": m_reset}, minute + 60 - now)
        c[1] += 1
        c[3] += 1
        return None, {"X-RateLimit-Minutely-Limit": str(m_limit),
                      "X-RateLimit-Minutely-Remaining": str(m_limit - int(c[1])),
                      "X-RateLimit-Minutely-Reset": m_reset,
                      "X-RateLimit-Limit": str(d_limit), "X-RateLimit-Remaining": str(d_limit - int(c[3])),
                      "X-RateLimit-Reset": d_reset}

    def _retry(self, headers: dict[str, str], seconds: float) -> dict[str, str]:
        if self.config.retry_after_on_429:
            headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        return headers

    def used(self, app: str, division: int) -> tuple[int, int]:
        c = self._counts.get((normal_client_id(app), division))
        return (int(c[1]), int(c[3])) if c else (0, 0)
