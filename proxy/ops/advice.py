"""Advice: a tool that keeps re-reading a whole set that Exact offers a sync or bulk way to read.

Contract
- ``whole_read(ctx, mandatory) -> 0 | 1 | 2``: 0 when the request is no whole read of a set with an
  alternative (``proxy.exact.alternatives``); 1 for a page after the first of one (the query has
  ``$skiptoken`` or ``$skip``); 2 for the first page (a whole read begins). A whole read is a GET of a
  REST list (no row key) that has neither ``$top`` nor any ``$filter`` but, at most, the mandatory one
  (``mandatory``: the expressions the proxy adds for that endpoint, ``rewrite_filter``'s, which the
  next-page links carry back). The query the tool sent is read (``ctx.client_query``), before any rewrite.
- ``advice_rows(records, threshold)``: from usage records (``proxy.ops.usage`` JSON form) of one day, one
  entry per tool (listener and family) and endpoint that read a whole set more than ``threshold``
  times: ``tool``, ``listener``, ``endpoint``, ``whole_reads``, ``calls``, ``sync``, ``bulk``, the
  estimated ``sync_calls_a_day``/``bulk_calls_a_day``, and ``advice``, the text of ``text(…)``:
  "tool X read crm/Accounts whole 48 times today (about 240 calls): use sync/CRM/Accounts with
  Timestamp (about 48 calls a day) or bulk/CRM/Accounts (about 48 calls a day)".
- The log line (INFO, logger ``exact_proxy.advice``) is written by ``proxy.ops.usage``, once a UTC day per
  tool and endpoint, when the count passes the threshold; it carries names and counts, never a query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from proxy.exact.alternatives import ALTERNATIVES, Alternative, estimate

if TYPE_CHECKING:
    from proxy.context import Context

log = logging.getLogger("exact_proxy.advice")

FIRST, NEXT, NONE = 2, 1, 0


def whole_read(ctx: Context, mandatory: Iterable[str | None]) -> int:
    cls = ctx.cls
    if (cls is None or cls.kind != "rest" or cls.entity_key or ctx.method != "GET"
            or cls.endpoint not in ALTERNATIVES):
        return NONE
    first = FIRST
    query = ctx.client_query
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        name = unquote_plus(name).strip().lower()
        if name == "$top":
            return NONE
        if name == "$filter":
            expr = unquote_plus(value).strip()
            if not any(expr == m for m in mandatory if m):
                return NONE
        elif name in ("$skiptoken", "$skip"):
            first = NEXT
    return first


def tool_name(listener: str, tool: str) -> str:
    return f"{tool} (listener {listener})"


def text(listener: str, tool: str, alt: Alternative, reads: int, calls: int) -> str:
    sync_calls, bulk_calls = estimate(reads, calls)
    ways = []
    if alt.sync:
        ways.append(f"{alt.sync} with Timestamp (about {sync_calls} calls a day)")
    if alt.bulk:
        ways.append(f"{alt.bulk} (about {bulk_calls} calls a day)")
    return (f"tool {tool_name(listener, tool)} read {alt.rest} whole {reads} times today (about {calls} "
            f"calls): use " + " or ".join(ways))


def advice_rows(records: Iterable[dict], threshold: int) -> list[dict]:
    sums: dict[tuple[str, str, str], list[int]] = {}
    for rec in records:
        reads = int(rec.get("whole_reads") or 0)
        if not reads and not rec.get("whole_calls"):
            continue
        key = (str(rec.get("listener")), str(rec.get("tool")), str(rec.get("endpoint")))
        s = sums.setdefault(key, [0, 0])
        s[0] += reads
        s[1] += int(rec.get("whole_calls") or 0)
    rows = []
    for (listener, tool, endpoint), (reads, calls) in sorted(sums.items()):
        alt = ALTERNATIVES.get(endpoint)
        if alt is None or reads <= threshold:
            continue
        sync_calls, bulk_calls = estimate(reads, calls)
        rows.append({"tool": tool, "listener": listener, "endpoint": endpoint, "whole_reads": reads,
                     "calls": calls, "sync": alt.sync, "bulk": alt.bulk,
                     "sync_calls_a_day": sync_calls if alt.sync else None,
                     "bulk_calls_a_day": bulk_calls if alt.bulk else None,
                     "advice": text(listener, tool, alt, reads, calls)})
    return rows
