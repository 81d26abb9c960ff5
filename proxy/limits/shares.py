"""Shares of the day: ``limits.shares`` rules give a tool class a part of each division's day and minute.

Contract (all times are ``clock.time()`` epoch seconds; a share's counts are per app and division):
- A share matches tools like ``limits.priority`` does (``match``: listener, User-Agent, header); a call
  belongs to the first share that matches, or to none (the unshared calls).
- **Reserve** (``reserve: {day, minute}``): calls kept back for the share. A call of any other class
  (another share or none) is held while the division's free calls in the day (or minute) are no more
  than what the other shares still have in reserve; the share's own calls may use its reserve and
  whatever else is free.
- **Cap** (``cap: {day, minute}``): at most so many of the share's calls in a day (minute); a
  fraction below 1 (``0.6``) is that part of the division's limit as the proxy knows it.
- **Pace** (``pace: {calls, from, to}``, UTC ``"HH:MM"``; ``to`` at or before ``from`` runs past
  midnight): within the window at most ``calls`` of the share's calls, spread evenly: the next call may
  go ``(end - last) / (calls - used + 1)`` after the last one, so a job that starts on time finishes
  one step before the window ends, and one that fell behind catches up evenly, never in a burst. Outside
  its window a share is not paced.
- ``ShareBoard`` keeps one division's counts; ``ShareGate`` is one class's view of it, a meter of the
  division's queue like a token bucket (``proxy.limits.window.Meter``): a call held by its share keeps
  its place while calls of other classes pass. ``blocked(now)`` says why and until when.
- The rules and their validation: ``proxy.limits.share_settings``.
- ``record()`` / ``restore(rec)``: the day's counts and pace state by share name, written with the
  division's windows record (``proxy.limits.book``: exact after a clean stop; after a crash as of the
  last write, which the windows' ceiling keeps at most ``limits.lease`` calls behind). A record of
  another day is ignored; a share renamed or removed starts afresh. The minute's counts are not kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.limits.share_settings import DAY, Pace, Share, cap_of

if TYPE_CHECKING:
    from proxy.limits.division import Division


class ShareBoard:
    """One app and division: the calls of each share in the current day, minute and pace window."""

    def __init__(self, division: Division, shares: tuple[Share, ...]) -> None:
        self.division = division
        self.shares = shares
        n = len(shares)
        self.day_start = self.minute_start = 0.0
        self.day_used = [0] * n
        self.minute_used = [0] * n
        self.pace_start: list[float | None] = [None] * n
        self.pace_used = [0] * n
        self.pace_last: list[float | None] = [None] * n
        self.reserving = [i for i, s in enumerate(shares) if s.reserve_day or s.reserve_minute]
        self.gates = {i: ShareGate(self, i) for i in range(-1, n)}

    def adopt(self, old: ShareBoard) -> None:
        """A reloaded policy: counts carry over to the shares of the same name."""
        names = {s.name: i for i, s in enumerate(old.shares)}
        self.day_start, self.minute_start = old.day_start, old.minute_start
        for i, s in enumerate(self.shares):
            j = names.get(s.name)
            if j is not None:
                self.day_used[i], self.minute_used[i] = old.day_used[j], old.minute_used[j]
                self.pace_start[i], self.pace_used[i] = old.pace_start[j], old.pace_used[j]
                self.pace_last[i] = old.pace_last[j]

    def record(self) -> dict[str, object]:
        return {"day_start": self.day_start,
                "used": {s.name: self.day_used[i] for i, s in enumerate(self.shares)},
                "pace": {s.name: [self.pace_start[i], self.pace_used[i], self.pace_last[i]]
                         for i, s in enumerate(self.shares) if self.pace_start[i] is not None}}

    def restore(self, rec: dict[str, object]) -> None:
        self.roll(self.division.clock.time())
        used, pace = rec.get("used"), rec.get("pace")
        if rec.get("day_start") != self.day_start or not isinstance(used, dict):
            return  # another day's counts
        for i, share in enumerate(self.shares):
            n = used.get(share.name)
            if isinstance(n, int) and n >= 0:
                self.day_used[i] = n
            state = pace.get(share.name) if isinstance(pace, dict) else None
            if isinstance(state, list) and len(state) == 3 and isinstance(state[1], int):
                self.pace_start[i], self.pace_used[i], self.pace_last[i] = state[0], state[1], state[2]

    def roll(self, now: float) -> None:
        d = self.division
        d.roll(now)
        if d.day_start != self.day_start:
            self.day_start = d.day_start
            self.day_used = [0] * len(self.shares)
        if d.minute_start != self.minute_start:
            self.minute_start = d.minute_start
            self.minute_used = [0] * len(self.shares)

    def blocked(self, i: int, now: float) -> tuple[str | None, float, str]:
        """Why a call of share ``i`` (-1: unshared) cannot go now: ``cap``, ``pace`` or ``reserve``, until
        when, and the share that holds it (its own, or the one whose reserve it may not take)."""
        self.roll(now)
        d = self.division
        if i >= 0:
            s = self.shares[i]
            cap = cap_of(s.cap_day, d.day_limit)
            if cap is not None and self.day_used[i] >= cap:
                return "cap", self.day_start + DAY, s.name
            cap = cap_of(s.cap_minute, d.minute_limit)
            if cap is not None and self.minute_used[i] >= cap:
                return "cap", self.minute_start + 60, s.name
            if s.pace is not None:
                at = self._paced_at(i, s.pace, now)
                if at > now:
                    return "pace", at, s.name
        if self.reserving:
            held_day = held_minute = 0
            holder = ""
            for j in self.reserving:
                if j != i:
                    r = self.shares[j]
                    held_day += max(0, r.reserve_day - self.day_used[j])
                    held_minute += max(0, r.reserve_minute - self.minute_used[j])
                    holder = holder or r.name
            if held_day and d.day_limit - d.day_used <= held_day:
                return "reserve", self.day_start + DAY, holder
            if held_minute and d.minute_limit - d.minute_used <= held_minute:
                return "reserve", self.minute_start + 60, holder
        return None, now, ""

    def _paced_at(self, i: int, pace: Pace, now: float) -> float:
        begin = pace.window(self.day_start, now)
        if begin is None or self.pace_start[i] != begin:
            return now  # outside the window, or the window's first call
        end = begin + pace.length
        used = self.pace_used[i]
        if used >= pace.calls:
            return end
        last = self.pace_last[i]
        if last is None:
            return now
        return last + (end - last) / (pace.calls - used + 1)

    def take(self, i: int) -> None:
        if i < 0:
            return
        now = self.division.clock.time()
        self.roll(now)
        self.day_used[i] += 1
        self.minute_used[i] += 1
        pace = self.shares[i].pace
        if pace is not None:
            begin = pace.window(self.day_start, now)
            if begin is not None:
                if self.pace_start[i] != begin:
                    self.pace_start[i], self.pace_used[i] = begin, 0
                self.pace_used[i] += 1
                self.pace_last[i] = now

    def give_back(self, i: int) -> None:
        if i < 0:
            return
        self.day_used[i] = max(0, self.day_used[i] - 1)
        self.minute_used[i] = max(0, self.minute_used[i] - 1)
        if self.pace_start[i] is not None:
            self.pace_used[i] = max(0, self.pace_used[i] - 1)

    def rows(self, now: float) -> list[dict[str, object]]:
        """Each share's use in this division (the status page)."""
        self.roll(now)
        d = self.division
        out: list[dict[str, object]] = []
        for i, s in enumerate(self.shares):
            row: dict[str, object] = {"share": s.name, "today": self.day_used[i], "minute": self.minute_used[i]}
            if s.reserve_day or s.reserve_minute:
                row["reserve_left"] = (f"{max(0, s.reserve_minute - self.minute_used[i])}/"
                                       f"{max(0, s.reserve_day - self.day_used[i])}")
            cap = cap_of(s.cap_day, d.day_limit)
            if cap is not None:
                row["cap_day"] = cap
            if s.pace is not None:
                begin = s.pace.window(self.day_start, now)
                used = self.pace_used[i] if begin is not None and self.pace_start[i] == begin else 0
                row["paced"] = f"{used}/{s.pace.calls}" if begin is not None else "outside its window"
            reason, until, _ = self.blocked(i, now)
            if reason is not None:
                row["held"] = reason
                row["next_call_in_s"] = round(until - now, 1)
            out.append(row)
        return out


class ShareGate:
    """One class's meter in the division's queue: a call of share ``index`` (-1: unshared) may go
    when its share allows it."""

    __slots__ = ("board", "index")

    def __init__(self, board: ShareBoard, index: int) -> None:
        self.board, self.index = board, index

    @property
    def name(self) -> str:
        return self.board.shares[self.index].name if self.index >= 0 else "(unshared)"

    def blocked(self) -> tuple[str | None, float, str]:
        return self.board.blocked(self.index, self.board.division.clock.time())

    def has_capacity(self) -> bool:
        return self.blocked()[0] is None

    def free_in(self) -> float:
        reason, until, _ = self.blocked()
        return 0.0 if reason is None else max(0.0, until - self.board.division.clock.time())

    def take(self) -> None:
        self.board.take(self.index)

    def give_back(self) -> None:
        self.board.give_back(self.index)

