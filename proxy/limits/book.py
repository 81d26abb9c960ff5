"""All divisions the proxy tracks, their token buckets, and their persistence.

Contract
- ``Book(clock)``: ``division(app, division, settings)`` returns the ``Division`` (created on first use
  with the policy's limits); ``buckets_for(app, division, endpoint, settings)`` the token buckets that
  apply to a request (per app, division and rule). ``Book(clock, factory)`` makes its divisions with
  ``factory`` (cluster mode: the shared windows' divisions, ``proxy.cluster.windows``, never persisted here).
- Persistence through the store (namespace ``windows``): per app and division the window starts, a
  *ceiling* of calls used (the count plus a lease, queued when the count passes the ceiling on file or
  a new minute starts, so most calls write nothing; the store coalesces them into its batched write),
  the learned limits and the pause. After a clean stop the exact counts are written. After a crash
  (``kill -9``) the division probes first (one call, then Exact's remaining figures, since calls lost
  since the last flush may lie in this minute); the day counts as used up to the ceiling plus two
  minutes' allowance (a flush interval may straddle a minute boundary). In the minute on file the
  count resumes from the ceiling and the division probes first, so the rest of that minute stays
  useful (without probing, it is spent). Whatever may have been lost since the last flush is assumed
  spent or confirmed by Exact first, never granted twice.
- A reloaded policy applies to divisions already tracked from their next request (``Division.apply``).
- ``share_gate(division, settings, index)``: the meter of share ``index`` (-1: unshared calls) in that
  division's ``ShareBoard`` (``proxy.limits.shares``), made on first use and after a reload that
  changed the shares (counts kept by share name); None when nothing applies to the call (no shares,
  or an unshared call while no share holds a reserve). The board's day counts go in the division's
  record (``shares``) and come back when the board is made again after a restart the same day.
- ``snapshot()`` and ``metric_rows()`` for the status page and Prometheus; no tokens, only counts (and
  each share's use per division, once shares are configured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from proxy.clock import Clock, utc_text
from proxy.limits.buckets import ClockLimiter
from proxy.limits.division import Division
from proxy.limits.settings import Bucket, LimitSettings
from proxy.limits.shares import ShareBoard, ShareGate
from proxy.limits.turns import Turns

if TYPE_CHECKING:
    from proxy.ops.metrics import Row
    from proxy.store.base import Store

NAMESPACE = "windows"


def _iso(epoch: float) -> str | None:
    if not epoch or not math.isfinite(epoch):
        return None
    return utc_text(epoch)


class Book:
    def __init__(self, clock: Clock,
                 factory: Callable[[str, int, LimitSettings, Clock], Division] = Division) -> None:
        self.clock = clock
        self.factory = factory  # cluster mode: the shared windows' divisions (proxy.cluster.windows)
        self.divisions: dict[tuple[str, int], Division] = {}
        self.buckets: dict[tuple[str, int, int, Bucket], ClockLimiter] = {}  # (app, division, rule #, rule)
        self.store: Store | None = None
        self._restored: dict[str, dict[str, Any]] = {}
        self.turns = Turns()
        self.boards: dict[tuple[str, int], ShareBoard] = {}
        self._shares_restored: dict[tuple[str, int], dict[str, Any]] = {}  # until the board is made

    def division(self, app: str, division: int, settings: LimitSettings) -> Division:
        key = (app, division)
        d = self.divisions.get(key)
        if d is None:
            d = self.divisions[key] = self.factory(app, division, settings, self.clock)
            d.turns = self.turns
            rec = self._restored.pop(f"{app}|{division}", None)
            if rec is not None:
                self._restore(d, rec)
                if isinstance(rec.get("shares"), dict):
                    self._shares_restored[key] = rec["shares"]
        elif d.settings is not settings:  # a reload: its limits apply to divisions already tracked
            d.apply(settings)
        return d

    def buckets_for(self, app: str, division: int, endpoint: str | None, settings: LimitSettings
                    ) -> tuple[ClockLimiter, ...]:
        if not settings.buckets:
            return ()
        out = []
        for i, rule in enumerate(settings.buckets):
            if rule.division not in (None, division) or rule.endpoint not in (None, endpoint):
                continue
            key = (app, division, i, rule)
            b = self.buckets.get(key)
            if b is None:
                b = self.buckets[key] = ClockLimiter(rule.rate, rule.per, rule.burst, self.clock)
            out.append(b)
        return tuple(out)

    def share_gate(self, d: Division, settings: LimitSettings, index: int) -> ShareGate | None:
        key = (d.app, d.division)
        board = self.boards.get(key)
        if board is None or board.shares is not settings.shares:
            new = ShareBoard(d, settings.shares)
            if board is not None:
                new.adopt(board)
            elif key in self._shares_restored:  # the counts on file (a restart the same day)
                new.restore(self._shares_restored.pop(key))
            board = self.boards[key] = new
        if index < 0 and not board.reserving:
            return None
        return board.gates[index]

    # -- persistence ---------------------------------------------------------------------------------
    async def load(self, store: Store) -> None:
        self.store = store
        self._restored = {k: v for k, v in (await store.load(NAMESPACE)).items() if isinstance(v, dict)}

    def restore_all(self, settings: LimitSettings) -> None:
        """Bring back every division of the state file now (status pages show them after a restart)."""
        for key in list(self._restored):
            app, _, div = key.rpartition("|")
            try:
                self.division(app, int(div), settings)
            except ValueError:
                self._restored.pop(key, None)

    def persist(self, d: Division, lease: int, clean: bool = False) -> None:
        if self.store is None:
            return
        if (not clean and d.minute_used <= d.persisted_minute and d.day_used <= d.persisted_day and not d.dirty
                and d.minute_start == d.persisted_minute_start):
            return  # the record on file still covers every call reserved (the common case: no write)
        extra = 0 if clean else lease
        d.persisted_minute = d.minute_used + extra
        d.persisted_day = d.day_used + extra
        d.persisted_minute_start = d.minute_start
        d.dirty = False
        board = self.boards.get((d.app, d.division))
        self.store.put(NAMESPACE, f"{d.app}|{d.division}", {
            **({"shares": board.record()} if board is not None and board.shares else {}),
            "minute_start": d.minute_start, "minute_ceiling": d.persisted_minute,
            "day_start": d.day_start, "day_ceiling": d.persisted_day,
            "minute_limit": d.minute_limit, "day_limit": d.day_limit,
            "learned_minute": d.learned_minute, "learned_day": d.learned_day,
            "paused_until": d.paused_until, "streak": d.streak, "known": d.known, "clean": clean,
            "written_at": self.clock.time()})

    def _restore(self, d: Division, rec: dict[str, Any]) -> None:
        now = self.clock.time()
        d.roll(now)
        try:
            clean = bool(rec.get("clean"))
            minute_limit = int(rec.get("minute_limit", d.minute_limit))
            day_limit = min(d.policy_day, int(rec.get("day_limit", d.day_limit)))
            if d.minute_cap is not None:
                minute_limit = min(minute_limit, d.minute_cap)
            same_minute = rec.get("minute_start") == d.minute_start
            can_probe = not d.known  # probing is on in the policy
            if rec.get("day_start") == d.day_start:
                ceiling = int(rec["day_ceiling"])
                # after a crash: calls sent since the last flush (at most a second, which may straddle
                # a minute boundary) are assumed spent
                d.day_used = ceiling if clean else min(d.policy_day, ceiling + 2 * minute_limit)
            if same_minute:
                ceiling = int(rec["minute_ceiling"])
                # after a crash the ceiling on file bounds what was sent, but calls since the last flush
                # may lie beyond it: resume from it and let the probe's answer (Exact's remaining count)
                # correct it; without probing, the minute is spent
                d.minute_used = ceiling if clean or can_probe else max(ceiling, minute_limit)
            d.minute_limit, d.day_limit = minute_limit, day_limit
            d.learned_minute = int(rec["learned_minute"]) if rec.get("learned_minute") else None
            d.learned_day = int(rec["learned_day"]) if rec.get("learned_day") else None
            d.pace_tail = int(minute_limit * d.settings.pace)
            d.paused_until = float(rec.get("paused_until", 0.0))
            d.streak = int(rec.get("streak", 0))
            if clean:
                d.known = d.known or bool(rec.get("known"))
            # else: a crash; calls lost since the last flush may lie in this minute, so the division
            # probes first and adopts what Exact reports for it
        except (KeyError, TypeError, ValueError):
            return
        d.persisted_minute, d.persisted_day = d.minute_used, d.day_used
        d.persisted_minute_start = d.minute_start

    def close(self, lease: int) -> None:
        for d in self.divisions.values():
            self.persist(d, lease, clean=True)

    # -- status --------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock.time()
        rows = []
        for d in sorted(self.divisions.values(), key=lambda x: (x.app, x.division)):
            d.roll(now)
            longest = max((now - w.since for w in d.waiters), default=0.0)
            rows.append({"app": d.app, "division": d.division,
                         "minute": f"{d.minute_used}/{d.minute_limit}", "today": f"{d.day_used}/{d.day_limit}",
                         "exact_left": f"{_fmt(d.exact_minute_remaining)}/{_fmt(d.exact_day_remaining)}",
                         "queue": len(d.waiters), "longest_wait_s": round(longest, 1),
                         "paused_until": _iso(d.paused_until) if d.paused_until > now else None,
                         "minute_resets_in_s": round(d.minute_start + 60 - now, 1),
                         "day_resets_in_s": round(d.day_start + 86400 - now, 1),
                         "paused_for_s": round(d.paused_until - now, 1) if d.paused_until > now else None})
            board = self.boards.get((d.app, d.division))
            if board is not None and board.shares:
                rows[-1]["shares"] = board.rows(now)
        return rows

    def metric_rows(self) -> Iterator[Row]:
        now = self.clock.time()
        for d in self.divisions.values():
            d.roll(now)
            labels = {"app": d.app, "division": str(d.division)}
            yield ("exact_proxy_budget_remaining", "Calls left in the window (minute or day)",
                   {**labels, "window": "minute"}, max(0, d.minute_limit - d.minute_used))
            yield ("exact_proxy_budget_remaining", "Calls left in the window (minute or day)",
                   {**labels, "window": "day"}, max(0, d.day_limit - d.day_used))
            yield ("exact_proxy_queue_depth", "Requests waiting for call budget", labels, len(d.waiters))
        for board in self.boards.values():
            board.roll(now)
            labels = {"app": board.division.app, "division": str(board.division.division)}
            for i, share in enumerate(board.shares):
                for window, used in (("minute", board.minute_used[i]), ("day", board.day_used[i])):
                    yield ("exact_proxy_share_calls", "Calls of a share (limits.shares) in the window",
                           {**labels, "share": share.name, "window": window}, used)


def _fmt(v: int | None) -> str:
    return "-" if v is None else str(v)
