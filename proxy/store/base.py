"""The state store interface: small JSON values by (namespace, key), written behind, read at start.

Contract (every implementation; filters only ever see this):
- ``put(namespace, key, value)`` and ``delete(namespace, key)`` are synchronous and never block on
  I/O: they change the in-memory view at once and queue the write. A background task writes the queue
  at least every ``flush_interval`` seconds (on the injected clock).
- ``await load(namespace) -> dict`` and ``await get(namespace, key, default)`` read the in-memory view,
  so pending writes are visible at once.
- ``await flush()`` writes everything pending now (after a token rotation, a lost write is a lost chain).
- ``healthy`` is False while writes fail; the view in memory keeps serving, and ``problem`` says why
  in words (None while healthy). ``describe()`` names the backend for status pages. ``open()`` /
  ``close()`` bracket its life; ``close()`` flushes.
A Redis implementation fills the same five calls without touching any filter.
"""

from __future__ import annotations

import abc
from typing import Any


class Store(abc.ABC):
    healthy: bool = True

    def __init__(self) -> None:
        self._view: dict[str, dict[str, Any]] = {}

    @property
    def problem(self) -> str | None:
        """Why the store cannot write, in words; None while it can."""
        return None

    def put(self, namespace: str, key: str, value: Any) -> None:
        self._view.setdefault(namespace, {})[key] = value
        self._queued(namespace, key, value)

    def delete(self, namespace: str, key: str) -> None:
        self._view.get(namespace, {}).pop(key, None)
        self._queued(namespace, key, None)

    async def load(self, namespace: str) -> dict[str, Any]:
        return dict(self._view.get(namespace, {}))

    async def get(self, namespace: str, key: str, default: Any = None) -> Any:
        return self._view.get(namespace, {}).get(key, default)

    @abc.abstractmethod
    def _queued(self, namespace: str, key: str, value: Any) -> None:
        """Remember a pending write (``None`` deletes)."""

    @abc.abstractmethod
    async def flush(self) -> None: ...

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str: ...
