"""The answer cache's memory: held answers by key, bounded, forgotten per endpoint on a write.

Contract
- ``get(key, now, ttl)`` is the entry stored less than ``ttl`` seconds before ``now`` (an older one
  is dropped), and marks it recently used.
- ``generation(scope)`` is read before a call goes out; ``put(key, held, now, generation)`` keeps
  the answer only while no write to its scope passed since (``forget(scope)``), so an answer that was
  under way while its endpoint changed is never kept. An answer larger than ``max_entry`` is not
  kept; the least recently used entries go first while more than ``max_entries`` or ``max_bytes``
  are held.
- ``forget(scope)`` drops every entry of the scope (each division, each user) and bumps its
  generation. Nothing is persisted: a restart starts empty.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from proxy.reuse.buffer import Held
from proxy.reuse.key import AnswerKey, Scope


@dataclass(frozen=True, slots=True)
class Entry:
    held: Held
    stored: float


class AnswerStore:
    def __init__(self) -> None:
        self.entries: OrderedDict[AnswerKey, Entry] = OrderedDict()
        self.bytes = 0
        self.generations: dict[Scope, int] = {}
        self.evicted = 0

    def get(self, key: AnswerKey, now: float, ttl: float) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if now - entry.stored >= ttl:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def generation(self, scope: Scope) -> int:
        return self.generations.get(scope, 0)

    def put(self, key: AnswerKey, held: Held, now: float, generation: int, max_entries: int, max_bytes: int,
            max_entry: int) -> bool:
        if held.size > max_entry or self.generation(key.scope) != generation:
            return False
        if key in self.entries:
            self._drop(key)
        self.entries[key] = Entry(held, now)
        self.bytes += held.size
        while self.entries and (len(self.entries) > max_entries or self.bytes > max_bytes):
            self._drop(next(iter(self.entries)))
            self.evicted += 1
        return key in self.entries

    def forget(self, scope: Scope) -> int:
        self.generations[scope] = self.generation(scope) + 1
        gone = [k for k in self.entries if k.scope == scope]
        for k in gone:
            self._drop(k)
        return len(gone)

    def _drop(self, key: AnswerKey) -> None:
        entry = self.entries.pop(key)
        self.bytes -= entry.held.size
