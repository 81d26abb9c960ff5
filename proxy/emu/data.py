"""Deterministic rows per division, generated lazily, plus the writes made to crm/Accounts.

Contract
- ``DataStore(config, clock)``; ``table(division, spec_name) -> Table`` builds that division's rows on first
  use from ``random.Random(f"{division}:{name}")``, so the same division always has the same data.
- ``Table.by_key`` (key -> row) and ``Table.ordered()`` (rows by key, case-folded, as Exact pages them) and
  ``Table.by_timestamp()`` (rows by ``Timestamp``, for sync endpoints). Every stored row carries a
  ``Timestamp`` (Int64) that only sync endpoints show.
- Accounts: ``deleted_accounts`` generated accounts are deleted from the start and listed in sync/Deleted.
- ``insert/update/delete`` (Accounts) give the row a new Timestamp above every earlier one; a deleted row
  moves to sync/Deleted.
"""

from __future__ import annotations

import bisect
import uuid
from random import Random

from .config import EmulatorConfig
from .entities import SPECS, date

DELETED_ENTITY_TYPE = {"Accounts": 2}


class Table:
    def __init__(self, key: str) -> None:
        self.key = key
        self.by_key: dict[str, dict] = {}
        self._keys: list[str] = []  # case-folded keys, sorted
        self._by_ts: list[dict] | None = None

    def add(self, row: dict) -> None:
        k = row[self.key].lower()
        if k not in self.by_key:
            bisect.insort(self._keys, k)
        self.by_key[k] = row
        self._by_ts = None

    def remove(self, key: str) -> dict | None:
        k = key.lower()
        row = self.by_key.pop(k, None)
        if row is not None:
            i = bisect.bisect_left(self._keys, k)
            del self._keys[i]
            self._by_ts = None
        return row

    def get(self, key: str) -> dict | None:
        return self.by_key.get(key.lower())

    def keys_after(self, key: str | None) -> list[str]:
        start = 0 if key is None else bisect.bisect_right(self._keys, key.lower())
        return self._keys[start:]

    def ordered(self) -> list[dict]:
        return [self.by_key[k] for k in self._keys]

    def by_timestamp(self) -> list[dict]:
        if self._by_ts is None:
            self._by_ts = sorted(self.by_key.values(), key=lambda r: r["Timestamp"])
        return self._by_ts

    def touched(self) -> None:
        self._by_ts = None


class DataStore:
    def __init__(self, config: EmulatorConfig, clock) -> None:
        self.config = config
        self.clock = clock
        self._tables: dict[tuple[int, str], Table] = {}
        self._stamp: dict[int, int] = {}
        self._deleted_ids: dict[int, list[str]] = {}

    def next_timestamp(self, division: int) -> int:
        self.table(division, "Accounts")  # generated rows get their stamps first
        n = self._stamp.get(division, 10_000_000) + 1
        self._stamp[division] = n
        return n

    def table(self, division: int, name: str) -> Table:
        t = self._tables.get((division, name))
        if t is None:
            t = self._build(division, name)
        return t

    def _build(self, division: int, name: str) -> Table:
        spec = SPECS[name]
        if name == "Deleted":
            self.table(division, "Accounts")
            return self._tables.setdefault((division, name), Table(spec.key))
        rng = Random(f"{division}:{name}")
        n = self.config.count_for(spec.count_key)
        extra = self.config.deleted_accounts if name == "Accounts" else 0

        def lookup(other: str) -> list[dict]:
            return self.table(division, other).ordered()

        rows = [spec.generate(rng, i, division, lookup) for i in range(n + extra)]
        rows.sort(key=lambda r: (r["Modified"], r[spec.key]))
        stamp = self._stamp.get(division, 10_000_000)
        for r in rows:
            stamp += 1
            r["Timestamp"] = stamp
        self._stamp[division] = stamp
        table = Table(spec.key)
        self._tables[(division, name)] = table
        gone = rows[-extra:] if extra else []
        for r in rows[:n] if extra else rows:
            table.add(r)
        if gone:
            deleted = self._tables.setdefault((division, "Deleted"), Table("ID"))
            self._deleted_ids[division] = [r["ID"] for r in gone]
            for r in gone:
                deleted.add(self._tombstone(rng, division, name, r))
        return table

    def _tombstone(self, rng: Random, division: int, name: str, row: dict) -> dict:
        stamp = self._stamp.get(division, 10_000_000) + 1
        self._stamp[division] = stamp
        return {
            "ID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "Timestamp": stamp,
            "EntityKey": row[SPECS[name].key],
            "EntityType": DELETED_ENTITY_TYPE.get(name, 0),
            "DeletedBy": None,
            "DeletedDate": date(int(self.clock.time() * 1000)),
            "Division": division,
        }

    def deleted_ids(self, division: int) -> list[str]:
        self.table(division, "Accounts")
        return list(self._deleted_ids.get(division, []))

    # -- writes on Accounts --------------------------------------------------------------------------------
    def insert(self, division: int, name: str, values: dict) -> dict:
        spec = SPECS[name]
        table = self.table(division, name)
        now = date(int(self.clock.time() * 1000))
        row = {f: None for f in spec.fields}
        row.update({k: v for k, v in values.items() if k in spec.fields and k != spec.key})
        row.update({spec.key: str(uuid.uuid4()), "Created": now, "Modified": now, "Division": division})
        row["Timestamp"] = self.next_timestamp(division)
        table.add(row)
        return row

    def update(self, division: int, name: str, key: str, values: dict) -> dict | None:
        spec = SPECS[name]
        table = self.table(division, name)
        row = table.get(key)
        if row is None:
            return None
        row.update(
            {
                k: v
                for k, v in values.items()
                if k in spec.fields and k not in (spec.key, "Created", "Division")
            }
        )
        row["Modified"] = date(int(self.clock.time() * 1000))
        row["Timestamp"] = self.next_timestamp(division)
        table.touched()
        return row

    def delete(self, division: int, name: str, key: str) -> bool:
        row = self.table(division, name).remove(key)
        if row is None:
            return False
        deleted = self.table(division, "Deleted")
        rng = Random(f"{division}:deleted:{key}")
        deleted.add(self._tombstone(rng, division, name, row))
        self._deleted_ids.setdefault(division, []).append(row[SPECS[name].key])
        return True
