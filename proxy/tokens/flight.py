"""Single flight and remembered refusals for the broker's upstream token calls.

Contract
- ``Flights.run(key, make)``: the first caller for ``key`` starts ``make()`` as a task of its own; every
  caller that comes while it runs awaits the same task and gets the same result (``joined`` True). The
  task finishes even when every caller goes away (a tool that disconnects must not lose a rotation:
  a lost rotation is a lost chain). After it ends, the next caller starts a new flight.
- ``Refusals``: what Exact answered to a code or refresh token it refused (400/401 with an OAuth error),
  keyed by the token's fingerprint and the credentials that presented it, so that a tool retrying a
  dead token in a loop is answered locally and costs Exact nothing (no call, no error). Kept for
  ``ttl`` seconds, the newest ``limit`` entries.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[T]] = {}

    def running(self, key: Hashable) -> bool:
        return key in self._running

    async def run(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, joined): joined is True for callers that shared a flight someone else started."""
        task = self._running.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(make())
            self._running[key] = task

            def done(t: asyncio.Task[T], k: Hashable = key) -> None:
                if self._running.get(k) is t:
                    self._running.pop(k, None)

            task.add_done_callback(done)
        return await asyncio.shield(task), joined


@dataclass(frozen=True)
class Refused:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


class Refusals:
    def __init__(self, ttl: float = 86400.0, limit: int = 10000) -> None:
        self.ttl, self.limit = ttl, limit
        self._seen: OrderedDict[tuple[str, str], Refused] = OrderedDict()

    def get(self, key: tuple[str, str], now: float) -> Refused | None:
        hit = self._seen.get(key)
        if hit is None:
            return None
        if now - hit.at > self.ttl:
            del self._seen[key]
            return None
        return hit

    def put(self, key: tuple[str, str], refused: Refused) -> None:
        self._seen[key] = refused
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


def remembered(status: int, body: dict[str, Any]) -> bool:
    """Exact's final word on a code or refresh token: an OAuth error that retrying cannot change (not a
    TooEarly pause, a daily limit or a passing fault)."""
    description = str(body.get("error_description", ""))
    return status in (400, 401) and body.get("error") in ("invalid_grant", "unauthorized_client",
                                                          "invalid_request", "invalid_client") \
        and "not expired" not in description
