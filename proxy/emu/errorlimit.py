"""Exact's error limit: too many 400/401/403/404 per (app, division, endpoint) in a rolling hour blocks it.

Contract
- ``record(app, division, endpoint, status, now)``: remembers an error when ``status`` is in
  ``error_statuses``; when the count in the rolling ``error_window`` exceeds ``error_limit`` the triple is
  blocked until ``now + error_block_seconds``.
- ``blocked(app, division, endpoint, now) -> bool``.
- ``reset()`` forgets errors and blocks.
"""

from __future__ import annotations

from collections import deque

from .config import EmulatorConfig

Key = tuple[str, "int | None", str]


class ErrorLimit:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._statuses = frozenset(config.error_statuses)
        self._errors: dict[Key, deque[float]] = {}
        self._blocked: dict[Key, float] = {}

    def reset(self) -> None:
        self._errors.clear()
        self._blocked.clear()

    def blocked(self, app: str, division: int | None, endpoint: str, now: float) -> bool:
        if not self._blocked:
            return False
        key = (app, division, endpoint)
        until = self._blocked.get(key)
        if until is None:
            return False
        if now >= until:
            del self._blocked[key]
            self._errors.pop(key, None)
            return False
        return True

    def record(self, app: str, division: int | None, endpoint: str, status: int, now: float) -> None:
        if status not in self._statuses:
            return
        key = (app, division, endpoint)
        q = self._errors.get(key)
        if q is None:
            q = self._errors[key] = deque()
        q.append(now)
        horizon = now - self.config.error_window
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) > self.config.error_limit:
            self._blocked[key] = now + self.config.error_block_seconds

    def blocks(self) -> list[dict]:
        return [
            {"app": a, "division": d, "endpoint": e, "until": u} for (a, d, e), u in self._blocked.items()
        ]
