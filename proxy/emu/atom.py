"""Atom XML rendering (``application/atom+xml``), Exact's answer when the client does not ask for JSON.

Contract
- ``feed(base, self_url, title, rows, next_url, count)`` -> bytes: ``<feed xml:base=…>`` with ``<id>``,
  one ``<entry>`` per row (``<id>`` = the row's absolute ``__metadata.uri``,
  ``content/m:properties/d:Field``), ``<link rel="next" href=absolute>`` when there is a next page, and
  ``<m:count>`` when an inline count was asked for.
- ``entry(base, row)`` -> bytes: one ``<entry>`` document (a GET by key, a POST result).
Rows are the JSON-shaped dicts (with ``__metadata``); ``/Date(ms)/`` strings become ``Edm.DateTime``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

NS = (
    'xmlns="http://www.w3.org/2005/Atom" '
    'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
    'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
)
_DATE = re.compile(r"^/Date\((-?\d+)\)/$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _prop(name: str, value) -> str:
    if value is None:
        return f'<d:{name} m:null="true" />'
    if isinstance(value, bool):
        return f'<d:{name} m:type="Edm.Boolean">{"true" if value else "false"}</d:{name}>'
    if isinstance(value, int):
        kind = "Edm.Int64" if name == "Timestamp" else "Edm.Int32"
        return f'<d:{name} m:type="{kind}">{value}</d:{name}>'
    if isinstance(value, float):
        return f'<d:{name} m:type="Edm.Double">{value!r}</d:{name}>'
    text = str(value)
    m = _DATE.match(text)
    if m:
        iso = datetime.fromtimestamp(int(m.group(1)) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        return f'<d:{name} m:type="Edm.DateTime">{iso}</d:{name}>'
    if _GUID.match(text):
        return f'<d:{name} m:type="Edm.Guid">{text}</d:{name}>'
    return f"<d:{name}>{escape(text)}</d:{name}>"


def _entry_body(row: dict, updated: str) -> str:
    meta = row.get("__metadata", {})
    uri = meta.get("uri", "")
    props = "".join(_prop(k, v) for k, v in row.items() if k != "__metadata")
    return (
        f'<id>{escape(uri)}</id><title type="text" /><updated>{updated}</updated>'
        f'<author><name /></author><link rel="edit" href={quoteattr(uri)} />'
        f"<category term={quoteattr(meta.get('type', ''))} "
        f'scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme" />'
        f'<content type="application/xml"><m:properties>{props}</m:properties></content>'
    )


def _now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def feed(
    base: str,
    self_url: str,
    title: str,
    rows: list[dict],
    next_url: str | None,
    count: int | None,
    now: float,
) -> bytes:
    updated = _now(now)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f"<feed xml:base={quoteattr(base)} {NS}>",
        f'<title type="text">{escape(title)}</title><id>{escape(self_url)}</id><updated>{updated}</updated>',
        f'<link rel="self" title={quoteattr(title)} href={quoteattr(title)} />',
    ]
    if count is not None:
        parts.append(f"<m:count>{count}</m:count>")
    for row in rows:
        parts.append(f"<entry>{_entry_body(row, updated)}</entry>")
    if next_url:
        parts.append(f'<link rel="next" href={quoteattr(next_url)} />')
    parts.append("</feed>")
    return "".join(parts).encode()


def entry(base: str, row: dict, now: float) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<entry xml:base={quoteattr(base)} {NS}>{_entry_body(row, _now(now))}</entry>"
    ).encode()
