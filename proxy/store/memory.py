"""``MemoryStore``: the store interface with nothing on disk (``state.path: ":memory:"``, and tests)."""

from __future__ import annotations

from typing import Any

from proxy.store.base import Store


class MemoryStore(Store):
    def __init__(self, reason: str | None = None) -> None:
        super().__init__()
        self.reason = reason

    def _queued(self, namespace: str, key: str, value: Any) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return "memory" + (f" ({self.reason})" if self.reason else "")
