"""Deterministic data per division, generated lazily, and the writes made to it.

Contract: ``Dataset(config)``. ``entity(path)`` maps a path after the division (``crm/Accounts``,
``bulk/CRM/Accounts``, ``sync/Financial/TransactionLines``, case-insensitive) to an ``EntitySet``
(name, model type, mode regular/bulk/sync) or None. ``rows(division, name)`` is the division's row list
for that entity (the same every run: seeded by division), in key order; Accounts take POST/PUT/DELETE,
and deleted accounts move to ``sync/Deleted``. Rows keep ``Modified`` as ``/Date(ms)/`` and a growing
Int64 ``Timestamp``.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

BASE_MS = 1_640_995_200_000  # 2022-01-01T00:00:00Z

CITIES = ("Amsterdam", "Rotterdam", "Utrecht", "Delft", "Gent", "Antwerpen", "Brussel", "Eindhoven", "Leiden")
WORDS = ("Acme", "Noord", "Zuid", "Polder", "Dijk", "Molen", "Tulp", "Haven", "Brug", "Kaas", "Fiets", "Gracht")


@dataclass(frozen=True)
class Entity:
    name: str            # Accounts
    service: str         # crm
    model: str           # Account
    key: str             # ID
    default_rows: int
    bulk: bool
    sync: bool


ENTITIES = {e.service + "/" + e.name.lower(): e for e in (
    Entity("Accounts", "crm", "Account", "ID", 250, True, True),
    Entity("Contacts", "crm", "Contact", "ID", 180, True, True),
    Entity("Items", "logistics", "Item", "ID", 120, True, True),
    Entity("GLAccounts", "financial", "GLAccount", "ID", 80, True, True),
    Entity("TransactionLines", "financialtransaction", "TransactionLine", "ID", 2500, True, True),
    Entity("SalesInvoices", "salesinvoice", "SalesInvoice", "InvoiceID", 100, True, True),
    Entity("Divisions", "system", "Division", "Code", 0, False, False),
)}
# Exact's sync service names TransactionLines under Financial.
ALIASES = {"financial/transactionlines": "financialtransaction/transactionlines"}


@dataclass(frozen=True)
class EntitySet:
    entity: Entity
    mode: str            # regular | bulk | sync | deleted
    path: str            # as Exact spells it, for links: crm/Accounts, bulk/CRM/Accounts


def resolve(path: str) -> EntitySet | None:
    low = path.strip("/").lower()
    mode = "regular"
    for prefix in ("bulk/", "sync/", "read/"):
        if low.startswith(prefix):
            mode = {"bulk/": "bulk", "sync/": "sync", "read/": "regular"}[prefix]
            low = low[len(prefix):]
            break
    if mode == "sync" and low == "deleted":
        return EntitySet(Entity("Deleted", "sync", "Deleted", "ID", 0, False, True), "deleted", "sync/Deleted")
    low = ALIASES.get(low, low)
    entity = ENTITIES.get(low)
    if entity is None or (mode == "bulk" and not entity.bulk) or (mode == "sync" and not entity.sync):
        return None
    spelled = path.strip("/")
    return EntitySet(entity, mode, spelled)


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _date(ms: int) -> str:
    return f"/Date({ms})/"


class Dataset:
    def __init__(self, config) -> None:
        self.config = config
        self._rows: dict[tuple[int, str], list[dict]] = {}
        self._index: dict[tuple[int, str], dict[str, dict]] = {}
        self._deleted: dict[int, list[dict]] = {}
        self._timestamp = 1_000_000_000  # above every generated Timestamp

    def count(self, name: str, entity: Entity) -> int:
        return int(self.config.rows.get(name, entity.default_rows))

    def rows(self, division: int, entity: Entity) -> list[dict]:
        key = (division, entity.name)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._generate(division, entity)
            rows.sort(key=lambda r: str(r[entity.key]))
            self._rows[key] = rows
            self._index[key] = {str(r[entity.key]).lower(): r for r in rows}
        return rows

    def find(self, division: int, entity: Entity, key: str) -> dict | None:
        self.rows(division, entity)
        return self._index[(division, entity.name)].get(key.lower())

    def deleted(self, division: int) -> list[dict]:
        if division not in self._deleted:
            rng = random.Random(f"deleted-{division}")
            self._deleted[division] = [self._deleted_row(division, _guid(rng), "Accounts", 1000 + i)
                                       for i in range(3)]
        return self._deleted[division]

    def _deleted_row(self, division: int, gid: str, entity: str, ts: int) -> dict:
        return {"ID": gid, "EntityKey": gid, "EntityType": 2 if entity == "Accounts" else 1, "Division": division,
                "DeletedBy": "00000000-0000-0000-0000-000000000001", "DeletedDate": _date(BASE_MS + ts * 1000),
                "Timestamp": ts}

    # -- writes (Accounts) -------------------------------------------------------------------------
    def next_timestamp(self) -> int:
        self._timestamp += 1
        return self._timestamp

    def insert(self, division: int, entity: Entity, fields: dict, now_ms: int) -> dict:
        rows = self.rows(division, entity)
        row = {k: v for k, v in fields.items() if not k.startswith("__")}
        row[entity.key] = str(uuid.uuid4())
        row.setdefault("Name", "")
        row["Created"] = row["Modified"] = _date(now_ms)
        row["Timestamp"] = self.next_timestamp()
        rows.append(row)
        rows.sort(key=lambda r: str(r[entity.key]))
        self._index[(division, entity.name)][row[entity.key].lower()] = row
        return row

    def update(self, row: dict, fields: dict, now_ms: int) -> None:
        for k, v in fields.items():
            if k not in ("ID", "Created", "Timestamp") and not k.startswith("__"):
                row[k] = v
        row["Modified"] = _date(now_ms)
        row["Timestamp"] = self.next_timestamp()

    def delete(self, division: int, entity: Entity, row: dict) -> None:
        rows = self.rows(division, entity)
        rows.remove(row)
        gid = str(row[entity.key])
        del self._index[(division, entity.name)][gid.lower()]
        self.deleted(division).append(self._deleted_row(division, gid, entity.name, self.next_timestamp()))

    # -- generation --------------------------------------------------------------------------------
    def _generate(self, division: int, e: Entity) -> list[dict]:
        rng = random.Random(f"{division}-{e.name}")
        n = self.count(f"{e.service}/{e.name.lower()}", e)
        out = []
        for i in range(n):
            row: dict[str, Any]
            gid = _guid(rng)
            modified = BASE_MS + rng.randrange(0, 3 * 365 * 86400) * 1000
            name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} B.V."
            ts = 1_000_000 + division % 1000 * 10_000 + i
            common = {"Modified": _date(modified), "Created": _date(modified - 86400000), "Timestamp": ts,
                      "Division": division}
            if e.name == "Accounts":
                row = {"ID": gid, "Code": f"{i + 1:>18}", "Name": name, "City": rng.choice(CITIES),
                       "Country": rng.choice(("NL", "BE")), "Email": f"info{i}@example.com",
                       "Status": rng.choice(("C", "P", "S")), "IsSupplier": rng.random() < 0.2,
                       "VATNumber": f"NL{rng.randrange(10**8, 10**9)}B01", "Phone": f"+31 10 {rng.randrange(10**6, 10**7)}"}
            elif e.name == "Contacts":
                row = {"ID": gid, "FullName": f"{rng.choice(('Anna', 'Bram', 'Cor', 'Daan', 'Eva'))} {rng.choice(WORDS)}",
                       "Email": f"c{i}@example.com", "Account": _guid(rng)}
            elif e.name == "Items":
                row = {"ID": gid, "Code": f"ITEM-{i:05d}", "Description": f"{rng.choice(WORDS)} item {i}",
                       "CostPriceStandard": round(rng.uniform(1, 500), 2), "IsSalesItem": True}
            elif e.name == "GLAccounts":
                row = {"ID": gid, "Code": f"{1000 + i * 10}", "Description": f"GL {rng.choice(WORDS)} {i}",
                       "Type": rng.choice((10, 12, 20, 110))}
            elif e.name == "TransactionLines":
                row = {"ID": gid, "AmountDC": round(rng.uniform(-5000, 5000), 2), "EntryNumber": 100000 + i,
                       "Date": _date(modified), "Description": f"Line {i}", "FinancialYear": 2024 + i % 3,
                       "FinancialPeriod": 1 + i % 12, "GLAccount": _guid(rng), "JournalCode": "70"}
            elif e.name == "SalesInvoices":
                row = {"InvoiceID": gid, "InvoiceNumber": 20240000 + i, "AmountDC": round(rng.uniform(10, 9000), 2),
                       "InvoiceDate": _date(modified), "Status": rng.choice((10, 20, 50)),
                       "Description": f"Invoice {i}"}
            else:
                row = {"ID": gid}
            row.update(common)
            out.append(row)
        return out
