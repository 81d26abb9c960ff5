"""Counts per (outcome, app, division, endpoint) and the optional JSONL request log.

Contract
- ``Stats.record(method, path, app, division, endpoint, status, outcome, now)`` counts one call and, when a
  log path is set, appends one JSON line ``{ts, method, path, app, division, endpoint, status, outcome}``.
  The path is logged without its query string, so no token, code or secret ever reaches the log.
- ``count(outcome=None, app=None, division=None, endpoint=None)`` sums the matching counts.
- ``as_dict()`` is what ``GET /_emulator/stats`` returns.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import IO


class Stats:
    def __init__(self, log_path: str | None = None) -> None:
        self.counts: Counter[tuple[str, str | None, int | None, str | None]] = Counter()
        self.requests = 0
        self._log: IO[str] | None = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115

    def record(
        self,
        method: str,
        path: str,
        app: str | None,
        division: int | None,
        endpoint: str | None,
        status: int,
        outcome: str,
        now: float,
    ) -> None:
        self.counts[(outcome, app, division, endpoint)] += 1
        if self._log is not None:
            self._log.write(
                json.dumps(
                    {
                        "ts": round(now, 3),
                        "method": method,
                        "path": path,
                        "app": app,
                        "division": division,
                        "endpoint": endpoint,
                        "status": status,
                        "outcome": outcome,
                    }
                )
                + "\n"
            )
            self._log.flush()

    def count(
        self,
        outcome: str | None = None,
        app: str | None = None,
        division: int | None = None,
        endpoint: str | None = None,
    ) -> int:
        total = 0
        for (o, a, d, e), n in self.counts.items():
            if outcome is not None and o != outcome:
                continue
            if app is not None and a != app:
                continue
            if division is not None and d != int(division):
                continue
            if endpoint is not None and e != endpoint.lower():
                continue
            total += n
        return total

    def reset(self) -> None:
        self.counts.clear()

    def as_dict(self) -> dict:
        by_outcome: Counter[str] = Counter()
        rows = []
        for (o, a, d, e), n in sorted(self.counts.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            by_outcome[o] += n
            rows.append({"app": a, "division": d, "endpoint": e, "outcome": o, "count": n})
        return {"requests": self.requests, "by_outcome": dict(by_outcome), "counts": rows}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
