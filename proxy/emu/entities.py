"""The entities the emulator serves and the endpoints that expose them.

Contract
- ``Spec``: one Exact entity: name, key field, OData type, ordered fields, date fields, row generator.
- ``ENDPOINTS``: case-folded endpoint (``crm/accounts``, ``bulk/crm/accounts``, ``sync/crm/accounts``,
  ``sync/deleted``) -> ``Endpoint(spec, kind, path)`` where kind is ``regular``, ``bulk`` or ``sync`` and
  ``path`` is the spelling used in absolute URLs (``bulk/CRM/Accounts``).
- Generators are pure functions of (rng, index, division, lookup) so data is deterministic per division.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
CITIES = [
    "Amsterdam",
    "Rotterdam",
    "Delft",
    "Utrecht",
    "Gent",
    "Antwerpen",
    "Köln",
    "London",
    "Lyon",
    "Sevilla",
]
WORDS = [
    "Blue",
    "North",
    "Quick",
    "Solid",
    "Green",
    "Bright",
    "Royal",
    "Prime",
    "Delta",
    "Urban",
    "Nova",
    "Alpine",
]
NOUNS = [
    "Bakery",
    "Logistics",
    "Consulting",
    "Garage",
    "Studio",
    "Trading",
    "Farms",
    "Software",
    "Dental",
    "Print",
]


def guid(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def date(ms: int) -> str:
    return f"/Date({ms})/"


def _stamps(rng: Random) -> tuple[str, str]:
    created = BASE_MS + rng.randrange(0, 300 * 86_400_000)
    modified = created + rng.randrange(0, 60 * 86_400_000)
    return date(created), date(modified)


Lookup = Callable[[str], list[dict]]


def gen_account(rng: Random, i: int, division: int, lookup: Lookup) -> dict:
    created, modified = _stamps(rng)
    name = f"{rng.choice(WORDS)} {rng.choice(NOUNS)} {i + 1}"
    return {
        "ID": guid(rng),
        "Code": f"{i + 1:>18}",
        "Name": name,
        "City": rng.choice(CITIES),
        "Country": rng.choice(["NL", "BE", "DE", "GB"]),
        "Email": f"info{i + 1}@example.com",
        "Phone": f"+31 20 {rng.randrange(1000000, 9999999)}",
        "Postcode": f"{rng.randrange(1000, 9999)} AB",
        "VATNumber": f"NL{rng.randrange(10**8, 10**9)}B01",
        "Status": rng.choice(["C", "P", "S"]),
        "IsSupplier": rng.random() < 0.2,
        "IsSales": rng.random() < 0.8,
        "Blocked": False,
        "AccountManager": None,
        "Created": created,
        "Modified": modified,
        "Division": division,
    }


def gen_contact(rng: Random, i: int, division: int, lookup: Lookup) -> dict:
    accounts = lookup("Accounts")
    acc = accounts[rng.randrange(len(accounts))] if accounts else None
    created, modified = _stamps(rng)
    first, last = (
        rng.choice(["Anna", "Bram", "Chris", "Daan", "Eva", "Fleur"]),
        rng.choice(["Jansen", "Peters", "Smit"]),
    )
    return {
        "ID": guid(rng),
        "Account": acc["ID"] if acc else None,
        "AccountName": acc["Name"] if acc else None,
        "FirstName": first,
        "LastName": last,
        "FullName": f"{first} {last}",
        "Email": f"{first.lower()}.{i}@example.com",
        "Created": created,
        "Modified": modified,
        "Division": division,
    }


def gen_item(rng: Random, i: int, division: int, lookup: Lookup) -> dict:
    created, modified = _stamps(rng)
    return {
        "ID": guid(rng),
        "Code": f"ITEM{i + 1:05d}",
        "Description": f"{rng.choice(WORDS)} item {i + 1}",
        "IsSalesItem": True,
        "IsStockItem": rng.random() < 0.6,
        "CostPriceStandard": round(rng.uniform(1, 500), 2),
        "Unit": "pc",
        "Created": created,
        "Modified": modified,
        "Division": division,
    }


def gen_glaccount(rng: Random, i: int, division: int, lookup: Lookup) -> dict:
    created, modified = _stamps(rng)
    return {
        "ID": guid(rng),
        "Code": f"{1000 + i * 10}",
        "Description": f"GL account {1000 + i * 10}",
        "Type": rng.choice([10, 12, 20, 110, 111]),
        "BalanceSide": rng.choice(["D", "C"]),
        "Created": created,
        "Modified": modified,
        "Division": division,
    }


def gen_transaction_line(rng: Random, i: int, division: int, lookup: Lookup) -> dict:
    gls, accounts = lookup("GLAccounts"), lookup("Accounts")
    created, modified = _stamps(rng)
    return {
        "ID": guid(rng),
        "EntryNumber": 10000 + i // 3,
        "FinancialYear": 2024,
        "FinancialPeriod": 1 + i % 12,
        "Date": created,
        "GLAccount": gls[rng.randrange(len(gls))]["ID"] if gls else None,
        "Account": accounts[rng.randrange(len(accounts))]["ID"] if accounts else None,
        "Description": f"Entry {10000 + i // 3}",
        "AmountDC": round(rng.uniform(-5000, 5000), 2),
        "Created": created,
        "Modified": modified,
        "Division": division,
    }


def gen_sales_invoice(rng: Random, i: int, division: int, lookup: Lookup) -> dict:
    accounts = lookup("Accounts")
    created, modified = _stamps(rng)
    acc = accounts[rng.randrange(len(accounts))]["ID"] if accounts else None
    return {
        "InvoiceID": guid(rng),
        "InvoiceNumber": 24000000 + i + 1,
        "InvoiceTo": acc,
        "OrderedBy": acc,
        "AmountDC": round(rng.uniform(10, 10000), 2),
        "Currency": "EUR",
        "InvoiceDate": created,
        "Status": rng.choice([20, 50]),
        "Description": f"Invoice {i + 1}",
        "Created": created,
        "Modified": modified,
        "Division": division,
    }


@dataclass(frozen=True)
class Spec:
    name: str
    count_key: str
    type: str
    key: str
    fields: tuple[str, ...]
    generate: Callable[[Random, int, int, Lookup], dict] | None
    date_fields: frozenset[str] = field(default_factory=lambda: frozenset({"Created", "Modified"}))


def _spec(name, count_key, type_, key, gen, sample_fields, dates=("Created", "Modified")) -> Spec:
    return Spec(name, count_key, type_, key, tuple(sample_fields), gen, frozenset(dates))


_F = {
    "Accounts": (
        "ID",
        "Code",
        "Name",
        "City",
        "Country",
        "Email",
        "Phone",
        "Postcode",
        "VATNumber",
        "Status",
        "IsSupplier",
        "IsSales",
        "Blocked",
        "AccountManager",
        "Created",
        "Modified",
        "Division",
    ),
    "Contacts": (
        "ID",
        "Account",
        "AccountName",
        "FirstName",
        "LastName",
        "FullName",
        "Email",
        "Created",
        "Modified",
        "Division",
    ),
    "Items": (
        "ID",
        "Code",
        "Description",
        "IsSalesItem",
        "IsStockItem",
        "CostPriceStandard",
        "Unit",
        "Created",
        "Modified",
        "Division",
    ),
    "GLAccounts": ("ID", "Code", "Description", "Type", "BalanceSide", "Created", "Modified", "Division"),
    "TransactionLines": (
        "ID",
        "EntryNumber",
        "FinancialYear",
        "FinancialPeriod",
        "Date",
        "GLAccount",
        "Account",
        "Description",
        "AmountDC",
        "Created",
        "Modified",
        "Division",
    ),
    "SalesInvoices": (
        "InvoiceID",
        "InvoiceNumber",
        "InvoiceTo",
        "OrderedBy",
        "AmountDC",
        "Currency",
        "InvoiceDate",
        "Status",
        "Description",
        "Created",
        "Modified",
        "Division",
    ),
    "Deleted": ("ID", "Timestamp", "EntityKey", "EntityType", "DeletedBy", "DeletedDate", "Division"),
}

SPECS = {
    s.name: s
    for s in [
        _spec("Accounts", "crm/accounts", "Exact.Web.Api.Models.Account", "ID", gen_account, _F["Accounts"]),
        _spec("Contacts", "crm/contacts", "Exact.Web.Api.Models.Contact", "ID", gen_contact, _F["Contacts"]),
        _spec("Items", "logistics/items", "Exact.Web.Api.Models.Logistics.Item", "ID", gen_item, _F["Items"]),
        _spec(
            "GLAccounts",
            "financial/glaccounts",
            "Exact.Web.Api.Models.Financial.GLAccount",
            "ID",
            gen_glaccount,
            _F["GLAccounts"],
        ),
        _spec(
            "TransactionLines",
            "financialtransaction/transactionlines",
            "Exact.Web.Api.Models.Financial.TransactionLine",
            "ID",
            gen_transaction_line,
            _F["TransactionLines"],
            ("Created", "Modified", "Date"),
        ),
        _spec(
            "SalesInvoices",
            "salesinvoice/salesinvoices",
            "Exact.Web.Api.Models.SalesInvoice.SalesInvoice",
            "InvoiceID",
            gen_sales_invoice,
            _F["SalesInvoices"],
            ("Created", "Modified", "InvoiceDate"),
        ),
        _spec(
            "Deleted",
            "sync/deleted",
            "Exact.Web.Api.Models.Sync.Deleted",
            "ID",
            None,
            _F["Deleted"],
            ("DeletedDate",),
        ),
    ]
}


@dataclass(frozen=True)
class Endpoint:
    spec: Spec
    kind: str  # regular | bulk | sync
    path: str


def _endpoints() -> dict[str, Endpoint]:
    out: dict[str, Endpoint] = {}
    table = [
        ("Accounts", "crm/Accounts", "bulk/CRM/Accounts", "sync/CRM/Accounts"),
        ("Contacts", "crm/Contacts", "bulk/CRM/Contacts", "sync/CRM/Contacts"),
        ("Items", "logistics/Items", "bulk/Logistics/Items", "sync/Logistics/Items"),
        ("GLAccounts", "financial/GLAccounts", "bulk/Financial/GLAccounts", "sync/Financial/GLAccounts"),
        (
            "TransactionLines",
            "financialtransaction/TransactionLines",
            "bulk/Financial/TransactionLines",
            "sync/Financial/TransactionLines",
        ),
        (
            "SalesInvoices",
            "salesinvoice/SalesInvoices",
            "bulk/SalesInvoice/SalesInvoices",
            "sync/SalesInvoice/SalesInvoices",
        ),
    ]
    for name, regular, bulk, sync in table:
        for kind, path in (("regular", regular), ("bulk", bulk), ("sync", sync)):
            out[path.lower()] = Endpoint(SPECS[name], kind, path)
    out["sync/deleted"] = Endpoint(SPECS["Deleted"], "sync", "sync/Deleted")
    return out


ENDPOINTS = _endpoints()
