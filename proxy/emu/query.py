"""Query options and Exact's refusals of a collection GET.

Contract
- ``Options.parse(query, endpoint)`` reads ``$filter``, ``$select``, ``$top``, ``$skip``, ``$skiptoken``,
  ``$inlinecount``; raises ``Refusal(message, outcome)`` for a bad option (outcome ``bad_request``), a sync
  filter on anything but Timestamp (``sync_filter``), bulk without ``$select`` (``bulk_select``) and mandatory
  filtering (``mandatory_filter``, Exact's exact message and field list).
- ``next_url(base, path, raw_query, token, top_left)`` keeps the original query, drops ``$skip``, replaces or
  adds ``$skiptoken`` (and lowers ``$top`` by what was already returned).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from .entities import Endpoint
from .odata import Filter, parse_filter

ACCOUNT_FIELDS = (
    "Accountant,AccountManager,AddressLine1,AddressLine2,AddressLine3,Blocked,BRIN,BSN,ChamberOfCommerce,City,"
    "Classification1,Classification2,Classification3,Classification4,Classification5,Classification6,"
    "Classification7,Classification8,Classification,Code,CodeAtSupplier,Country,Created,Email,EndDate,Fax,ID,"
    "InvoiceAccount,IsAccountant,IsReseller,IsSales,IsSupplier,MainContact,Modified,Name,Parent,Phone,Postcode,"
    "PriceList,Reseller,RSIN,SearchCode,StartDate,Status,Type,VATNumber"
).split(",")
ITEM_FIELDS = (
    "Barcode,Class_01,Class_02,Class_03,Class_04,Class_05,Class_06,Class_07,Class_08,Class_09,Class_10,Code,"
    "CostPriceNew,Created,Description,EndDate,ExtraDescription,FreeBoolField_01,FreeBoolField_02,FreeBoolField_03,"
    "FreeBoolField_04,FreeBoolField_05,ID,IsSalesItem,IsStockItem,ItemGroup,Modified,SearchCode,StartDate,"
    "Unit"
).split(",")
DEFAULT_ALLOWED = {"Accounts": ACCOUNT_FIELDS, "Items": ITEM_FIELDS}
MANDATORY = (
    "This endpoint has mandatory filtering applied. A GET request for this endpoint must have a $filter "
    "parameter with one of the following fields in the url:"
)
_GUID = re.compile(
    r"^(?:guid)?'?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})'?$"
)
_INT64 = re.compile(r"^(\d+)[Ll]?$")


class Refusal(Exception):
    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome


def allowed_fields(config, endpoint_key: str, ep: Endpoint) -> list[str]:
    got = config.mandatory_filter_fields.get(endpoint_key) or config.mandatory_filter_fields.get(
        ep.spec.name.lower()
    )
    return list(got) if got else DEFAULT_ALLOWED.get(ep.spec.name, ["ID", "Modified"])


def _int(query, name: str) -> int | None:
    v = query.get(name)
    if v is None:
        return None
    try:
        n = int(v)
    except ValueError:
        raise Refusal(f"Invalid value for {name}: '{v}'.", "bad_request") from None
    if n < 0:
        raise Refusal(f"Invalid value for {name}: '{v}'.", "bad_request")
    return n


@dataclass
class Options:
    flt: Filter | None
    select: list[str] | None
    top: int | None
    skip: int
    token: str | int | None
    inlinecount: bool

    @classmethod
    def parse(cls, query, endpoint_key: str, ep: Endpoint, config, mandatory: bool) -> Options:
        spec, sync = ep.spec, ep.kind == "sync"
        text = query.get("$filter")
        flt = None
        if text is not None and text.strip():
            try:
                flt = parse_filter(text)
            except ValueError as exc:
                raise Refusal(f"Error parsing $filter: {exc}.", "bad_request") from None
        if sync and flt is not None and (flt.fields - {"Timestamp"}):
            raise Refusal(
                "Only the Timestamp property can be used in $filter on sync endpoints.", "sync_filter"
            )
        raw_select = query.get("$select")
        if ep.kind == "bulk" and not (raw_select and raw_select.strip()):
            raise Refusal("The $select parameter is mandatory for bulk endpoints.", "bulk_select")
        allowed = allowed_fields(config, endpoint_key, ep) if mandatory else []
        if mandatory and (flt is None or not (flt.fields & set(allowed))):
            raise Refusal(MANDATORY + ",".join(allowed) + ".", "mandatory_filter")
        known = set(spec.fields) | ({"Timestamp"} if sync else set())
        if flt is not None:
            unknown = sorted(flt.fields - known - set(allowed_fields(config, endpoint_key, ep)))
            if unknown:
                raise Refusal(f"No property '{unknown[0]}' exists in type '{spec.type}'.", "bad_request")
        select = None
        if raw_select and raw_select.strip() and raw_select.strip() != "*":
            select = [s.strip() for s in raw_select.split(",") if s.strip()]
            bad = [s for s in select if s not in known]
            if bad:
                raise Refusal(f"No property '{bad[0]}' exists in type '{spec.type}'.", "bad_request")
        token: str | int | None = None
        raw = query.get("$skiptoken")
        if raw:
            m = (_INT64 if sync else _GUID).match(raw.strip())
            if m is None:
                raise Refusal(f"Invalid $skiptoken: '{raw}'.", "bad_request")
            token = int(m.group(1)) if sync else m.group(1).lower()
        inline = query.get("$inlinecount")
        if inline not in (None, "", "allpages", "none"):
            raise Refusal(f"Invalid value for $inlinecount: '{inline}'.", "bad_request")
        return cls(flt, select, _int(query, "$top"), _int(query, "$skip") or 0, token, inline == "allpages")


def next_url(base_path: str, raw_query: str, token: str, top_left: int | None) -> str:
    parts = []
    for item in raw_query.split("&") if raw_query else []:
        name = unquote_plus(item.split("=", 1)[0])
        if name in ("$skiptoken", "$skip") or (name == "$top" and top_left is not None):
            continue
        parts.append(item)
    if top_left is not None:
        parts.append(f"$top={top_left}")
    parts.append(f"$skiptoken={token}")
    return base_path + "?" + "&".join(parts)
