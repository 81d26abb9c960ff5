"""Exact's windows for one app and division, as the proxy knows them: no queue, no I/O.

Contract (all times are ``clock.time()`` epoch seconds):
- A fixed clock-minute window and a UTC-day window. ``blocked_until(now, buckets)`` says why nothing
  can be sent now and until when (``None``: it can go); ``reserve`` takes one call in both windows and
  the token buckets, ``release`` gives back one that was never sent.
- **Pacing.** Once only the minute's last ``limits.pace`` share is left, those calls are spread evenly
  over the rest of the minute (reason ``pace``); every call still goes in its minute.
- **Probe.** A division never seen sends one call first (reason ``probe`` while it is out).
- **Learning.** ``answered(headers)`` ends the probe and adopts Exact's limits (higher or lower; a
  division's own ``minutely`` caps them) and its remaining figures when they are lower than the
  proxy's count; the daily figures never raise the budget above the policy. ``upstream_429`` pauses
  the division until Exact's reset, else ``Retry-After``, else a backoff of 1, 2, 4 … seconds (capped);
  repeated 429s lengthen the pause.
- ``apply(settings)``: a reloaded policy's limits, with what Exact reported kept where not capped.
- ``wake()`` is called whenever capacity may have changed; the queue (``proxy.limits.division``)
  listens to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.clock import Clock
from proxy.exact.ratelimit import header_int as _int
from proxy.exact.ratelimit import retry_after_seconds
from proxy.limits.settings import LimitSettings


class Meter(Protocol):
    """What the queue asks of a token bucket (``proxy.limits.buckets``) or a share's gate
    (``proxy.limits.shares``): a request held back only by its meter keeps its place in the queue."""

    def has_capacity(self) -> bool: ...

    def free_in(self) -> float: ...

    def take(self) -> None: ...

    def give_back(self) -> None: ...


Buckets = Sequence[Meter]  # the token buckets (and the share's gate) that apply to one request


@dataclass
class Refusal:
    reason: str              # daily | max_wait | down (cluster mode: the shared server is unreachable)
    retry_at: float          # epoch seconds
    headers: dict[str, str]




class Window:
    def __init__(self, app: str, division: int, settings: LimitSettings, clock: Clock) -> None:
        self.app, self.division, self.clock = app, division, clock
        self.settings = settings
        self.policy_minute, self.policy_day = settings.window_limits(division)
        self.minute_cap = settings.minute_cap(division)
        self.minute_limit, self.day_limit = self.policy_minute, self.policy_day
        self.learned_minute: int | None = None   # what Exact's headers said, kept across reloads
        self.learned_day: int | None = None
        self.pace_tail = int(self.minute_limit * settings.pace)
        self.pace_start = self.pace_step = 0.0
        self.pace_left = 0
        self.minute_start = self.day_start = 0.0
        self.minute_used = self.day_used = 0
        self.paused_until = 0.0
        self.streak = 0
        self.known = not settings.probe
        self.probing = False
        self.exact_minute_remaining: int | None = None
        self.exact_day_remaining: int | None = None
        self.persisted_minute = self.persisted_day = -1
        self.persisted_minute_start: float | None = None
        self.dirty = False  # something besides the counts changed (limits, pause, probe): write it


    def apply(self, settings: LimitSettings) -> None:
        """A reloaded policy: its limits apply from now on, to this division as to new ones. What Exact
        reported stays: a learned limit is kept where the policy does not cap it lower."""
        self.settings = settings
        self.policy_minute, self.policy_day = settings.window_limits(self.division)
        self.minute_cap = settings.minute_cap(self.division)
        minute = self.learned_minute if self.learned_minute is not None else self.policy_minute
        self.minute_limit = min(minute, self.minute_cap) if self.minute_cap is not None else minute
        day = self.learned_day if self.learned_day is not None else self.policy_day
        self.day_limit = min(self.policy_day, day)
        self.pace_tail = int(self.minute_limit * settings.pace)
        if settings.probe is False:
            self.known, self.probing = True, False
        self.dirty = True
        self.wake()

    # -- windows -------------------------------------------------------------------------------------
    def roll(self, now: float) -> None:
        minute = math.floor(now / 60) * 60
        if minute != self.minute_start:
            self.minute_start, self.minute_used = minute, 0
            self.exact_minute_remaining = None
        day = math.floor(now / 86400) * 86400
        if day != self.day_start:
            self.day_start, self.day_used = day, 0
            self.exact_day_remaining = None

    def blocked_until(self, now: float, buckets: Buckets = ()) -> tuple[str | None, float]:
        """Why nothing can be sent now, and until when (``None`` reason: it can go)."""
        self.roll(now)
        if self.day_used >= self.day_limit:
            return "daily", self.day_start + 86400
        if self.paused_until > now:
            return "paused", self.paused_until
        if not self.known and self.probing:
            return "probe", math.inf
        if self.minute_used >= self.minute_limit:
            return "minute", self.minute_start + 60
        left = self.minute_limit - self.minute_used
        if left <= self.pace_tail:
            paced = self._paced_at(now, left)
            if paced > now:
                return "pace", paced
        for b in buckets:
            if not b.has_capacity():
                return "bucket", now + b.free_in()
        return None, now

    def _paced_at(self, now: float, left: int) -> float:
        """When the next call may go, once only ``left`` (<= the pace tail) calls remain in the minute:
        the tail is spread evenly over what is left of the minute, so a tool reading in a row waits a few
        seconds at a time instead of up to a minute for the next window; every call still goes in it."""
        if self.pace_start < self.minute_start or left > self.pace_left:  # the tail starts (again) here
            self.pace_start, self.pace_left = now, left
            self.pace_step = (self.minute_start + 60 - now) / left
        return self.pace_start + (self.pace_left - left) * self.pace_step

    def reserve(self, buckets: Buckets = ()) -> None:
        self.minute_used += 1
        self.day_used += 1
        for b in buckets:
            b.take()
        if not self.known:
            self.probing = True

    def release(self, buckets: Buckets = ()) -> None:
        self.minute_used = max(0, self.minute_used - 1)
        self.day_used = max(0, self.day_used - 1)
        for b in buckets:
            b.give_back()
        self.dirty = True
        self.wake()

    def refusal(self, reason: str, retry_at: float, now: float) -> Refusal:
        wait = max(1, math.ceil(retry_at - now))
        if reason == "daily":
            headers = {"X-RateLimit-Limit": str(self.day_limit), "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": str(int((self.day_start + 86400) * 1000))}
        else:
            headers = {"X-RateLimit-Minutely-Limit": str(self.minute_limit),
                       "X-RateLimit-Minutely-Remaining": str(max(0, self.minute_limit - self.minute_used)),
                       "X-RateLimit-Minutely-Reset": str(int(retry_at * 1000))}
        headers["Retry-After"] = str(wait)
        return Refusal(reason, retry_at, headers)

    def estimate(self, now: float, ahead: int) -> float:
        """Seconds until a request with ``ahead`` waiters before it could go (a lower bound)."""
        free_now = max(0, self.minute_limit - self.minute_used)
        start = max(now, self.paused_until)
        if ahead < free_now and start == now:
            return 0.0
        minutes = (ahead - free_now) // max(1, self.minute_limit) + 1
        return max(start, self.minute_start + 60 + (minutes - 1) * 60) - now

    def wake(self) -> None:
        """Capacity may have changed (the queue overrides this to look again)."""

    # -- what Exact says -----------------------------------------------------------------------------
    def answered(self, headers: Mapping[str, str], learn: bool) -> None:
        """An answer came back (any status): the probe is over; learn from Exact's headers."""
        now = self.clock.time()
        self.roll(now)
        if self.probing or not self.known:
            self.known, self.probing = True, False
            self.dirty = True
        if learn:
            self._learn(headers, now)
        self.wake()

    def unanswered(self, buckets: Buckets = (), sent: bool = True) -> None:
        """A reserved call got no answer from Exact (failure, local answer, cancellation). A call that
        was never ``sent`` is given back. If it was the probe, the probe ends without learning anything
        and the next call probes again: the queue never waits for headers that will not come."""
        if not sent:
            self.release(buckets)
        if self.probing:
            self.probing = False
            self.wake()

    def _learn(self, headers: Mapping[str, str], now: float) -> None:
        m_limit = _int(headers.get("X-RateLimit-Minutely-Limit"))
        m_left = _int(headers.get("X-RateLimit-Minutely-Remaining"))
        m_reset = _int(headers.get("X-RateLimit-Minutely-Reset"))
        if m_limit is not None and 0 < m_limit < 1_000_000:
            self.learned_minute = m_limit
            if self.minute_cap is not None:
                m_limit = min(m_limit, self.minute_cap)
            if m_limit != self.minute_limit:
                self.dirty = True
                self.pace_tail = int(m_limit * self.settings.pace)
            self.minute_limit = m_limit
        if m_left is not None and m_left >= 0:
            self.exact_minute_remaining = m_left
            reset = m_reset / 1000 if m_reset is not None else self.minute_start + 60
            if abs(reset - (self.minute_start + 60)) <= 1.5:
                self.minute_used = max(self.minute_used, self.minute_limit - m_left)
            elif reset > now and m_left == 0:
                self.paused_until = max(self.paused_until, reset)  # Exact's minute ends later than ours
        d_limit = _int(headers.get("X-RateLimit-Limit"))
        d_left = _int(headers.get("X-RateLimit-Remaining"))
        if d_limit is not None and 0 < d_limit:
            self.learned_day = d_limit
            self.day_limit = min(self.policy_day, d_limit)  # the daily header never raises the budget
        if d_left is not None and d_left >= 0:
            self.exact_day_remaining = d_left
            self.day_used = max(self.day_used, self.day_limit - min(d_left, self.day_limit))
        if m_left is not None or d_left is not None:
            self.streak = 0

    def upstream_429(self, headers: Mapping[str, str], pause_base: float, pause_cap: float) -> float:
        """Exact said 429: pause this division; returns the pause end."""
        now = self.clock.time()
        self.roll(now)
        self.known, self.probing = True, False
        self.streak += 1
        backoff = min(pause_cap, pause_base * 2 ** (self.streak - 1))
        until = None
        m_reset = _int(headers.get("X-RateLimit-Minutely-Reset"))
        d_reset = _int(headers.get("X-RateLimit-Reset"))
        if m_reset is not None and m_reset / 1000 > now:
            until = m_reset / 1000
            self.minute_used = max(self.minute_used, self.minute_limit)
        elif d_reset is not None and d_reset / 1000 > now and headers.get("X-RateLimit-Remaining", "").strip() == "0":
            until = d_reset / 1000
            self.day_used = max(self.day_used, self.day_limit)
        if until is None:
            ra = retry_after_seconds(headers.get("Retry-After"), now)
            until = now + (ra if ra is not None else backoff)
        if self.streak > 1:
            until = max(until, now + backoff)  # repeated 429s lengthen the pause
        self.paused_until = max(self.paused_until, until)
        self.dirty = True
        self.wake()
        return self.paused_until

