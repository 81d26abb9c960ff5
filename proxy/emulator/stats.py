"""What the emulator saw: counts per app, division, endpoint and outcome, and the JSONL request log.

Contract: ``Stats.record(method, path, app, division, endpoint, status, outcome)`` counts one call and,
when a request log is configured, appends one JSON line (time, method, path without query, app,
division, endpoint, status, outcome; never a token). ``count(...)`` sums the matching counters (None
matches anything); ``snapshot()`` is the JSON of ``/_emulator/stats``.
"""

from __future__ import annotations

import json
from collections import Counter


class Stats:
    def __init__(self, clock, request_log: str | None = None) -> None:
        self.clock = clock
        self.counts: Counter[tuple] = Counter()
        self.requests = 0
        self._log = open(request_log, "a", encoding="utf-8", buffering=1) if request_log else None  # noqa: SIM115

    def record(self, method: str, path: str, app, division, endpoint, status: int, outcome: str) -> None:
        self.counts[(app, division, endpoint, outcome)] += 1
        if self._log is not None:
            self._log.write(json.dumps({"ts": round(self.clock.time(), 3), "method": method, "path": path,
                                        "app": app, "division": division, "endpoint": endpoint,
                                        "status": status, "outcome": outcome}) + "\n")

    def count(self, outcome=None, app=None, division=None, endpoint=None) -> int:
        return sum(n for (a, d, e, o), n in self.counts.items()
                   if (outcome is None or o == outcome) and (app is None or a == app)
                   and (division is None or d == division) and (endpoint is None or e == endpoint))

    def reset(self) -> None:
        self.counts.clear()
        self.requests = 0

    def snapshot(self) -> dict:
        by_outcome: Counter[str] = Counter()
        rows = []
        for (a, d, e, o), n in sorted(self.counts.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            by_outcome[o] += n
            rows.append({"app": a, "division": d, "endpoint": e, "outcome": o, "count": n})
        return {"requests": self.requests, "outcomes": dict(by_outcome),
                "token_calls": self.count(endpoint="oauth2/token"), "calls": rows}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
