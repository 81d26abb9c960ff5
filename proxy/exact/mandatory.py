"""Exact's mandatory filtering: which endpoints need a ``$filter``, and how to add one that keeps every row.

Contract
- ``has_filter(raw_query)`` tells whether a query already has ``$filter`` however it is encoded
  (``$filter``, ``%24filter``, ``%24FILTER``).
- ``custom_options(raw_query)`` names the query options that are not OData system options (the name,
  decoded, does not start with ``$``), in order, each once. Exact ignores such options, so
  ``Accounts?ID=guid'…'`` is an unfiltered list to Exact: for a mandatory-filter endpoint, any such
  option means the tool's condition is in the wrong place, and adding a neutral ``$filter`` would turn
  its one row into every row. No field list is needed to tell (and none is complete): any option counts,
  except the few that carry no condition (``NOT_CONDITIONS``: ``access_token``, RFC 6750's token in
  the URI).
- ``add_filter(raw_query, expr)`` appends ``$filter=<expr>`` percent-encoded; every byte the client sent
  stays as it was.
- ``parse_allowed_fields(message)`` reads the field list out of Exact's 400 text ("…with one of the
  following fields in the url:A,B,C."); None when the text is not that error.
- ``neutral_filter(fields)`` picks a filter on an allowed field that keeps every row: ``ID`` first, then
  ``Modified``/``Created`` (never null), then ``Timestamp``; None when no such field is allowed.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, unquote_plus

DEFAULT_FILTER = "ID ne guid'00000000-0000-0000-0000-000000000000'"
MESSAGE_START = "This endpoint has mandatory filtering applied"
NOT_CONDITIONS = frozenset({"access_token"})
_FIELDS = re.compile(r"following fields in the url:\s*(?P<fields>[^.]*)\.?", re.IGNORECASE)


def has_filter(raw_query: str) -> bool:
    if not raw_query or ("filter" not in raw_query.lower() and "%" not in raw_query):
        return False  # (a percent-encoded name, %24filter or %66ilter, is decoded below)
    for part in raw_query.split("&"):
        name = part.split("=", 1)[0]
        if "%" in name:
            name = unquote(name)
        if name.strip().lower() == "$filter":
            return True
    return False


def custom_options(raw_query: str) -> list[str]:
    names: list[str] = []
    for part in raw_query.split("&") if raw_query else ():
        name = part.split("=", 1)[0]
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        name = name.strip()
        if name and not name.startswith("$") and name not in names and name.lower() not in NOT_CONDITIONS:
            names.append(name)
    return names


def add_filter(raw_query: str, expr: str) -> str:
    encoded = "$filter=" + quote(expr, safe="'(),")
    return f"{raw_query}&{encoded}" if raw_query else encoded


def parse_allowed_fields(message: str) -> list[str] | None:
    if MESSAGE_START.lower() not in message.lower():
        return None
    m = _FIELDS.search(message)
    if not m:
        return []
    return [f.strip() for f in m.group("fields").split(",") if f.strip()]


def neutral_filter(fields: list[str]) -> str | None:
    lower = {f.lower(): f for f in fields}
    if "id" in lower:
        return f"{lower['id']} ne guid'00000000-0000-0000-0000-000000000000'"
    for name in ("modified", "created"):
        if name in lower:
            return f"{lower[name]} ge datetime'1900-01-01'"
    if "timestamp" in lower:
        return f"{lower['timestamp']} gt 0L"
    return None
