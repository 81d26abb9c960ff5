"""The ``limits:`` and ``retry:`` sections of policies.yaml.

``limits`` mirrors Exact's windows per app and division (60 a minute, 5000 a day unless a division says
otherwise), bounds how long a request may wait (per tool too), adds optional token buckets per
division and/or endpoint, names the requests that go first, and gives tool classes shares of each
division's day and minute (``shares``, read in ``proxy.limits.share_settings``). ``retry`` says how transient faults are retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from proxy.limits.share_settings import Share, read_shares
from proxy.policy.matching import Match, read_match
from proxy.policy.reader import Reader


@dataclass(frozen=True)
class Bucket:
    division: int | None
    endpoint: str | None
    rate: float            # calls ...
    per: float             # ... per this many seconds
    burst: int             # at most this many at once


@dataclass(frozen=True)
class ToolWait:
    match: Match
    max_wait: float


@dataclass(frozen=True)
class LimitSettings:
    enabled: bool = True
    minutely: int = 60
    daily: int = 5000
    divisions: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    max_wait: float = 120.0
    probe: bool = True
    learn: bool = True
    pause_base: float = 1.0          # upstream 429 without reset or Retry-After: 1, 2, 4 ... seconds
    pause_cap: float = 300.0
    lease: int = 5                   # calls persisted ahead of use (a kill -9 may lose at most this many)
    pace: float = 0.2                # the last fifth of a minute's calls is spread over the rest of it
    buckets: tuple[Bucket, ...] = ()
    priority: tuple[Match, ...] = ()
    tools: tuple[ToolWait, ...] = ()     # max_wait per tool (the first rule that matches)
    learn_patience: bool = True          # wait no longer than a tool was seen to give up after
    shares: tuple[Share, ...] = ()       # shares of each division's day and minute (proxy.limits.shares)

    def window_limits(self, division: int) -> tuple[int, int]:
        m, d = self.divisions.get(division, (None, None))
        return (m if m is not None else self.minutely), (d if d is not None else self.daily)

    def minute_cap(self, division: int) -> int | None:
        """A division's own ``minutely`` is a ceiling that Exact's headers never raise; the global one is
        only the starting assumption (Exact may report a higher limit for the app)."""
        return self.divisions.get(division, (None, None))[0]


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 3                # retries after the first try
    base: float = 0.5                # seconds; doubles each time, with jitter
    cap: float = 8.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset((408, 503, 599)))


def read_limits(r: Reader) -> LimitSettings:
    d = LimitSettings()
    divisions: dict[int, tuple[int | None, int | None]] = {}
    for name, dr in r.items("divisions"):
        try:
            div = int(name)
        except ValueError:
            dr.problem((), "division keys must be division numbers, like 123456")
            continue
        m = dr.integer("minutely", 0, minimum=1) if dr.has("minutely") else None
        day = dr.integer("daily", 0, minimum=1) if dr.has("daily") else None
        dr.finish()
        divisions[div] = (m, day)
    buckets = []
    for br in r.sequence("buckets") or []:
        bucket_div = br.integer("division", 0, minimum=1) if br.has("division") else None
        ep = br.text("endpoint", None)
        rate = br.number("rate", 60, minimum=0, exclusive_minimum=True)
        per = br.number("per", 60, minimum=0, exclusive_minimum=True)
        burst = br.integer("burst", max(1, int(rate)), minimum=1)
        br.finish()
        if bucket_div is None and ep is None:
            br.problem((), "a bucket needs a division, an endpoint, or both")
            continue
        buckets.append(Bucket(bucket_div, ep.lower().strip("/") if ep else None, rate, per, burst))
    priority = tuple(read_match(pr) for pr in r.sequence("priority") or [])
    tools = []
    for tr in r.sequence("tools") or []:
        match = read_match(tr.mapping("match"))
        wait = tr.number("max_wait", d.max_wait, minimum=0)
        tr.finish()
        tools.append(ToolWait(match, wait))
    s = LimitSettings(
        enabled=r.boolean("enabled", d.enabled),
        minutely=r.integer("minutely", d.minutely, minimum=1),
        daily=r.integer("daily", d.daily, minimum=1),
        divisions=divisions,
        max_wait=r.number("max_wait", d.max_wait, minimum=0),
        probe=r.boolean("probe", d.probe),
        learn=r.boolean("learn", d.learn),
        pause_base=r.number("pause_base", d.pause_base, minimum=0.01),
        pause_cap=r.number("pause_cap", d.pause_cap, minimum=0.01),
        lease=r.integer("lease", d.lease, minimum=1, maximum=1000),
        pace=r.number("pace", d.pace, minimum=0, maximum=1),
        buckets=tuple(buckets),
        priority=priority,
        tools=tuple(tools),
        learn_patience=r.boolean("learn_patience", d.learn_patience),
    )
    budgets = [("limits.minutely and limits.daily", s.minutely, s.daily)]
    budgets += [(f"division {div}", *s.window_limits(div)) for div in sorted(divisions)]
    shares = read_shares(r, budgets)
    r.finish()
    return replace(s, shares=shares) if shares else s


def read_retry(r: Reader) -> RetrySettings:
    d = RetrySettings()
    r.seen.add("statuses")
    raw = r.data.get("statuses")
    statuses = d.statuses
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(v, int) and 400 <= v <= 599 for v in raw):
            r.problem(("statuses",), "must be a list of HTTP status codes, like [408, 503, 599]")
        else:
            statuses = frozenset(raw)
    s = RetrySettings(attempts=r.integer("attempts", d.attempts, minimum=0, maximum=10),
                      base=r.number("base", d.base, minimum=0), cap=r.number("cap", d.cap, minimum=0),
                      statuses=statuses)
    r.finish()
    return s
