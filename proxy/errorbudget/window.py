"""Rolling-window error counts per (app, division, endpoint).

Contract: ``count(key, now)`` is the number of counted errors in the last ``window`` seconds;
``add(key, now)`` counts one; ``reset_at(key, now)`` is when the oldest counted error leaves the window
(``now + window`` when there is none). Empty keys are dropped, so memory follows the endpoints that
actually err. ``records()`` / ``restore()`` turn the counts into store values and back;
``replace()`` sets a key's times (cluster mode keeps the shared window's last reply here).
"""

from __future__ import annotations

from collections import deque

Key = tuple[str, "int | None", str]  # (app, division or None for current/Me and oauth2/token, endpoint)


class ErrorWindows:
    def __init__(self, window: float) -> None:
        self.window = window
        self._times: dict[Key, deque[float]] = {}

    def _prune(self, key: Key, now: float) -> deque[float] | None:
        q = self._times.get(key)
        if q is None:
            return None
        cutoff = now - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._times[key]
            return None
        return q

    def __contains__(self, key: Key) -> bool:
        """Errors were counted for the key (some may have left the window since)."""
        return key in self._times

    def count(self, key: Key, now: float) -> int:
        q = self._prune(key, now)
        return len(q) if q else 0

    def add(self, key: Key, now: float) -> int:
        q = self._prune(key, now)
        if q is None:
            q = self._times[key] = deque()
        q.append(now)
        return len(q)

    def reset_at(self, key: Key, now: float) -> float:
        q = self._prune(key, now)
        return (q[0] if q else now) + self.window

    def times(self, key: Key) -> list[float]:
        return list(self._times.get(key, ()))

    def keys(self) -> list[Key]:
        return list(self._times)

    def replace(self, key: Key, times: list[float], now: float) -> None:
        """The key's times become ``times`` (cluster mode: the shared window as the server last said)."""
        kept = sorted(t for t in times if t > now - self.window)
        if kept:
            self._times[key] = deque(kept)
        else:
            self._times.pop(key, None)

    def restore(self, key: Key, times: list[float], now: float) -> None:
        kept = sorted(t for t in times if t > now - self.window)
        if kept:
            self._times[key] = deque(kept)


def key_text(key: Key) -> str:
    return f"{key[0]}|{'' if key[1] is None else key[1]}|{key[2]}"


def parse_key(text: str) -> Key | None:
    parts = text.split("|", 2)
    if len(parts) != 3:
        return None
    try:
        return parts[0], (int(parts[1]) if parts[1] else None), parts[2]
    except ValueError:
        return None
