"""The emulator's hourly error limit (its own code: nothing shared with the proxy's error budget).

Contract: ``ErrorLimit(config, clock)``. ``count(key)`` records one counted error (status in
``error_statuses``) for ``key = (app, division, endpoint)``; when more than ``error_limit`` errors fall
inside the rolling ``error_window`` (seconds), the key is blocked for ``error_block_seconds``.
``blocked(key)`` says whether calls for the key are refused now; ``answer()`` is the configured blocked
answer (default 429, empty body, no rate-limit headers); ``active()`` lists current blocks.
"""

from __future__ import annotations

from collections import deque

from aiohttp import web


class ErrorLimit:
    def __init__(self, config, clock) -> None:
        self.config = config
        self.clock = clock
        self._errors: dict[tuple, deque] = {}
        self._blocked: dict[tuple, float] = {}
        self.blocks_started = 0

    def count(self, key: tuple) -> None:
        now = self.clock.time()
        q = self._errors.setdefault(key, deque())
        q.append(now)
        while q and q[0] <= now - self.config.error_window:
            q.popleft()
        if len(q) > self.config.error_limit:
            self._blocked[key] = now + self.config.error_block_seconds
            self.blocks_started += 1
            q.clear()

    def blocked(self, key: tuple) -> bool:
        if not self._blocked:
            return False
        until = self._blocked.get(key)
        if until is None:
            return False
        if until > self.clock.time():
            return True
        del self._blocked[key]
        return False

    def errors(self, key: tuple) -> int:
        now = self.clock.time()
        return sum(1 for t in self._errors.get(key, ()) if t > now - self.config.error_window)

    def active(self) -> list[dict]:
        now = self.clock.time()
        return [{"app": k[0], "division": k[1], "endpoint": k[2], "until": until}
                for k, until in self._blocked.items() if until > now]

    def reset(self) -> None:
        self._errors.clear()
        self._blocked.clear()

    def answer(self) -> web.Response:
        body = self.config.error_block_body.encode()
        return web.Response(status=self.config.error_block_status, body=body,
                            content_type="application/json" if body else None)
