"""The state store: where every counter, pause, error count, learned filter and token chain lives.

``open_store(policy, clock)`` gives the store ``policy.state.path`` names (already made relative to the
policy file's directory): a SQLite file, or ``MemoryStore`` for ``":memory:"``. See ``base.Store`` for
the contract every implementation keeps.
"""

from __future__ import annotations

from proxy.store.base import Store
from proxy.store.memory import MemoryStore
from proxy.store.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "Store", "open_store"]


def open_store(policy, clock) -> Store:
    path = policy.state.path
    if not path or path == ":memory:":
        return MemoryStore("state.path is :memory:")
    return SqliteStore(path, clock, policy.state.flush_interval)
