"""Exact's refusals of a collection GET: mandatory filtering, bulk without ``$select``, sync filters.

Contract: ``check(emu, es, endpoint, flt, query, count_only) -> (message, outcome) | None``.
- Mandatory filtering (endpoints in ``mandatory_filter_endpoints``): no ``$filter``, or one naming no
  allowed field, gets Exact's exact message listing the allowed fields (``…in the url:A,B,….``).
  The lists come from Exact's own messages (Accounts from a capture of October 2022) and can be
  replaced per entity with ``mandatory_filter_fields``.
- ``bulk/…`` without ``$select``: 400 (outcome ``bulk_select``).
- ``sync/…`` with a ``$filter`` naming anything but ``Timestamp``: 400 (outcome ``sync_filter``).
"""

from __future__ import annotations

ACCOUNT_FIELDS = (
    "Accountant,AccountManager,AddressLine1,AddressLine2,AddressLine3,Blocked,BRIN,BSN,ChamberOfCommerce,City,"
    "Classification1,Classification2,Classification3,Classification4,Classification5,Classification6,"
    "Classification7,Classification8,Classification,Code,CodeAtSupplier,Country,Created,Email,EndDate,Fax,ID,"
    "InvoiceAccount,IsAccountant,IsReseller,IsSales,IsSupplier,MainContact,Modified,Name,Parent,Phone,Postcode,"
    "PriceList,Reseller,RSIN,SearchCode,StartDate,Status,Type,VATNumber").split(",")
ITEM_FIELDS = (
    "Barcode,Class_01,Class_02,Class_03,Class_04,Class_05,Class_06,Class_07,Class_08,Class_09,Class_10,Code,"
    "CostPriceNew,Created,Description,EndDate,ExtraDescription,FreeBoolField_01,FreeBoolField_02,FreeBoolField_03,"
    "FreeBoolField_04,FreeBoolField_05,ID,IsSalesItem,IsStockItem,ItemGroup,Modified,SearchCode,StartDate,"
    "Unit").split(",")
DEFAULT_FIELDS = {"Accounts": ACCOUNT_FIELDS, "Items": ITEM_FIELDS}

MANDATORY = ("This endpoint has mandatory filtering applied. A GET request for this endpoint must have a $filter "
             "parameter with one of the following fields in the url:")


def allowed_fields(emu, entity_name: str) -> list[str]:
    configured = emu.config.mandatory_filter_fields.get(entity_name)
    return list(configured) if configured else DEFAULT_FIELDS.get(entity_name, ["ID", "Modified"])


def check(emu, es, endpoint: str, flt, query, count_only: bool) -> tuple[str, str] | None:
    if endpoint in emu.mandatory and (not count_only or emu.config.mandatory_filter_on_count):
        allowed = allowed_fields(emu, es.entity.name)
        if flt is None or not (flt.fields & set(allowed)):
            return MANDATORY + ",".join(allowed) + ".", "mandatory_filter"
    if es.mode == "bulk" and not count_only and not query.get("$select"):
        return "$select is mandatory for bulk endpoints: name the fields you need.", "bulk_select"
    if es.mode in ("sync", "deleted") and flt is not None and flt.fields - {"Timestamp"}:
        return "Only Timestamp can be used in the $filter of a sync endpoint.", "sync_filter"
    return None
