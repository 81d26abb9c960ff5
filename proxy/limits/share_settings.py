"""The ``limits.shares`` rules: which tools get which share of each division's day and minute.

Contract: ``Share`` (a name, a ``match`` as ``limits.priority`` has, and any of ``reserve``, ``cap``,
``pace``) and ``Pace`` are frozen; ``cap_of(cap, limit)`` resolves a cap (a count, or a fraction below
1 of the division's limit); ``share_index`` picks the first share that matches a request (-1: none).
``read_shares(r, budgets)`` reads the list and refuses, with file and line, shares that cannot add up
in any of the budgets (the global limits and every division's own): reserves above the day's or the
minute's budget, a cap below the share's reserve (or allowing no call), a pace above the share's cap
or above what the other shares' reserves leave of the day or the minute, a pace window that is empty,
a time that is not ``"HH:MM"`` UTC. The engine that applies them is ``proxy.limits.shares``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxy.policy.matching import Match, read_match
from proxy.policy.reader import Reader

DAY = 86400.0


@dataclass(frozen=True)
class Pace:
    calls: int
    start: float           # seconds after 00:00 UTC
    length: float          # seconds (> 0); the window may run past midnight

    def window(self, day_start: float, now: float) -> float | None:
        """The start of the pace window ``now`` lies in, or None outside it."""
        for base in (day_start, day_start - DAY):
            begin = base + self.start
            if begin <= now < begin + self.length:
                return begin
        return None


@dataclass(frozen=True)
class Share:
    name: str
    match: Match
    reserve_day: int = 0
    reserve_minute: int = 0
    cap_day: float | None = None       # a count (>= 1) or a fraction (< 1) of the division's day
    cap_minute: float | None = None
    pace: Pace | None = None


def cap_of(cap: float | None, limit: int) -> int | None:
    if cap is None:
        return None
    return int(cap * limit) if cap < 1 else int(cap)


def share_index(shares: tuple[Share, ...], listener: str, headers: object) -> int:
    """The first share that matches the request, or -1 (unshared)."""
    for i, s in enumerate(shares):
        if s.match.matches(listener, headers):
            return i
    return -1


# -- the policy ----------------------------------------------------------------------------------------
def _time_of_day(r: Reader, key: str) -> float | None:
    raw = r.raw(key, None)
    if raw is None:
        return None
    if not isinstance(raw, str):
        r.problem((key,), f'must be a UTC time in quotes, like "07:00" (got {raw!r}; YAML reads an unquoted '
                          "10:30 as a number)")
        return None
    parts = raw.strip().split(":")
    try:
        h, m = int(parts[0]), int(parts[1])
        if len(parts) != 2 or not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
            raise ValueError
    except (ValueError, IndexError):
        r.problem((key,), f'must be a UTC time like "07:00" or "24:00", got {raw!r}')
        return None
    return h * 3600.0 + m * 60.0


def _cap(r: Reader, key: str) -> float | None:
    if not r.has(key):
        r.seen.add(key)
        return None
    v = r.number(key, 0, minimum=0, exclusive_minimum=True)
    if v <= 0:
        return None
    if v >= 1 and v != int(v):
        r.problem((key,), f"must be a whole number of calls or a fraction below 1 (like 0.6), got {v:g}")
        return None
    return v


def read_shares(r: Reader, budgets: list[tuple[str, int, int]]) -> tuple[Share, ...]:
    """``limits.shares``; ``budgets`` are the (where, minutely, daily) the shares must fit in: the
    global limits and every division's own."""
    shares: list[Share] = []
    readers: list[Reader] = []
    names: set[str] = set()
    for sr in r.sequence("shares") or []:
        name = sr.text("name", None) or ""
        if name in names:
            sr.problem(("name",), f"share {name!r} is named twice")
        names.add(name)
        match = read_match(sr.mapping("match"))
        if not sr.has("match"):
            sr.problem(("match",), "is required: the tools this share is for (listener, user_agent, header)")
        rr = sr.mapping("reserve")
        reserve_day = rr.integer("day", 0, minimum=0)
        reserve_minute = rr.integer("minute", 0, minimum=0)
        rr.finish()
        cr = sr.mapping("cap")
        cap_day, cap_minute = _cap(cr, "day"), _cap(cr, "minute")
        cr.finish()
        pace = None
        if sr.has("pace"):
            pr = sr.mapping("pace")
            calls = pr.integer("calls", 0, minimum=1)
            start, end = _time_of_day(pr, "from"), _time_of_day(pr, "to")
            pr.finish()
            if start is not None and end is not None and calls >= 1:
                if end == start:
                    pr.problem(("to",), f"the pace window from {pr.data.get('from')} to {pr.data.get('to')} "
                                        "is empty")
                else:
                    pace = Pace(calls, start % DAY, (end - start) % DAY or DAY)
        else:
            sr.seen.add("pace")
        sr.finish()
        if not (reserve_day or reserve_minute or cap_day or cap_minute or pace):
            sr.problem((), f"share {name!r} needs a reserve, a cap or a pace")
        shares.append(Share(name, match, reserve_day, reserve_minute, cap_day, cap_minute, pace))
        readers.append(sr)
    for where, minutely, daily in budgets:
        _check(shares, readers, r, where, minutely, daily)
    return tuple(shares)


def _check(shares: list[Share], readers: list[Reader], r: Reader, where: str, minutely: int, daily: int) -> None:
    """Refuse shares that cannot add up within one budget (``where``: 60 a minute, 5000 a day …)."""
    day = sum(s.reserve_day for s in shares)
    if day > daily:
        r.problem(("shares",), f"the reserves add up to {day} calls a day, more than the day's budget of "
                               f"{daily} ({where})")
    minute = sum(s.reserve_minute for s in shares)
    if minute > minutely:
        r.problem(("shares",), f"the reserves add up to {minute} calls a minute, more than the minute's budget "
                               f"of {minutely} ({where})")
    for s, sr in zip(shares, readers, strict=True):
        cap_day, cap_minute = cap_of(s.cap_day, daily), cap_of(s.cap_minute, minutely)
        if cap_day is not None and cap_day < max(1, s.reserve_day):
            sr.problem(("cap", "day"), f"share {s.name!r}: a cap of {cap_day} calls a day ({where}) is below "
                                       f"its reserve of {s.reserve_day}" if s.reserve_day else
                       f"share {s.name!r}: a cap of {cap_day} calls a day ({where}) allows no call")
        if cap_minute is not None and cap_minute < max(1, s.reserve_minute):
            sr.problem(("cap", "minute"), f"share {s.name!r}: a cap of {cap_minute} calls a minute ({where}) is "
                                          f"below its reserve of {s.reserve_minute}" if s.reserve_minute else
                       f"share {s.name!r}: a cap of {cap_minute} calls a minute ({where}) allows no call")
        if s.pace is None:
            continue
        others_day = day - s.reserve_day
        others_minute = minute - s.reserve_minute
        if cap_day is not None and s.pace.calls > cap_day:
            sr.problem(("pace", "calls"), f"share {s.name!r}: a pace of {s.pace.calls} calls is above its cap of "
                                          f"{cap_day} a day ({where})")
        if s.pace.calls > daily - others_day:
            sr.problem(("pace", "calls"), f"share {s.name!r}: a pace of {s.pace.calls} calls does not fit in the "
                                          f"day's budget of {daily} less the other shares' reserves of "
                                          f"{others_day} ({where})")
        per_minute = math.ceil(s.pace.calls * 60 / s.pace.length)
        room = min(minutely - others_minute, cap_minute if cap_minute is not None else minutely)
        if per_minute > room:
            sr.problem(("pace", "calls"), f"share {s.name!r}: {s.pace.calls} calls in {s.pace.length / 3600:g} h "
                                          f"are {per_minute} a minute, more than the {room} a minute left to it "
                                          f"({where})")
