"""Where Exact offers a cheaper way to read a whole set: its sync and bulk endpoints.

Contract (pure knowledge, no I/O, no state)
- ``alternative(endpoint) -> Alternative | None`` for an endpoint key as ``proxy.exact.classify``
  gives it (``crm/accounts``): its spelling as Exact writes it (``crm/Accounts``), the ``sync/…`` endpoint (read the changes since a ``Timestamp``) and the
  ``bulk/…`` endpoint (the whole set, 1000 rows a page instead of 60), either None when Exact has none
  that this module is sure of. None for an endpoint not listed.
- ``REST_PAGE`` (60) and ``BIG_PAGE`` (1000) are the rows per page of the REST and of the sync and bulk
  endpoints; ``estimate(reads, calls)`` gives the calls a day of the sync way (one full read, then about
  one page per read, when few rows change) and of the bulk way (each read in pages of 1000), from the
  whole reads made and the calls they took.
Only endpoints whose alternatives are named by Exact's REST API reference (start.exactonline.nl/docs/
HlpRestAPIResources.aspx, services ``Sync`` and ``Bulk``; 60 rows a REST page, 1000 a sync or bulk page)
and, checked here, by the endpoint lists of two public clients that call them: PyPI ``exact-online-sdk``
2.0.0 (``exact_online_sdk/api/endpoints.py``) and ``tap-exactonline`` 0.2.24 (``tap_exactonline/streams.py``).
A guess would send a tool to a 404. Spelled as Exact spells them, for the advice text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REST_PAGE = 60
BIG_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Alternative:
    rest: str            # the REST endpoint as Exact spells it: crm/Accounts
    sync: str | None
    bulk: str | None


ALTERNATIVES: dict[str, Alternative] = {
    "crm/accounts": Alternative("crm/Accounts", "sync/CRM/Accounts", "bulk/CRM/Accounts"),
    "crm/contacts": Alternative("crm/Contacts", "sync/CRM/Contacts", "bulk/CRM/Contacts"),
    "crm/addresses": Alternative("crm/Addresses", "sync/CRM/Addresses", "bulk/CRM/Addresses"),
    "logistics/items": Alternative("logistics/Items", "sync/Logistics/Items", "bulk/Logistics/Items"),
    "financial/glaccounts": Alternative("financial/GLAccounts", "sync/Financial/GLAccounts", "bulk/Financial/GLAccounts"),
    "financialtransaction/transactionlines": Alternative("financialtransaction/TransactionLines",
                                                         "sync/Financial/TransactionLines",
                                                         "bulk/Financial/TransactionLines"),
    "salesinvoice/salesinvoices": Alternative("salesinvoice/SalesInvoices", "sync/SalesInvoice/SalesInvoices",
                                              "bulk/SalesInvoice/SalesInvoices"),
}


def alternative(endpoint: str | None) -> Alternative | None:
    return ALTERNATIVES.get(endpoint) if endpoint else None


def estimate(reads: int, calls: int) -> tuple[int, int]:
    """(calls a day the sync way, calls a day the bulk way) for ``reads`` whole reads that took ``calls``."""
    if reads <= 0:
        return 0, 0
    pages = max(1.0, calls / reads)
    big_pages = math.ceil(pages * REST_PAGE / BIG_PAGE)
    return big_pages + reads - 1, big_pages * reads
