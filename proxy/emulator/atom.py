"""Atom XML answers, for clients that do not ask for JSON (Exact's default format)."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr


def _value(v) -> str:
    if v is None:
        return ' m:null="true" />'
    if isinstance(v, bool):
        return ' m:type="Edm.Boolean">' + ("true" if v else "false") + "</d:{}>"
    if isinstance(v, int):
        return ' m:type="Edm.Int64">' + str(v) + "</d:{}>"
    if isinstance(v, float):
        return ' m:type="Edm.Double">' + repr(v) + "</d:{}>"
    return ">" + escape(str(v)) + "</d:{}>"


def _entry(row: dict) -> str:
    meta = row.get("__metadata", {})
    props = []
    for k, v in row.items():
        if k == "__metadata":
            continue
        tail = _value(v)
        props.append(f"<d:{k}" + (tail.format(k) if "{}" in tail else tail))
    uri = meta.get("uri", "")
    return (f"<entry><id>{escape(uri)}</id><title type=\"text\" /><updated />"
            f"<link rel=\"edit\" title={quoteattr(meta.get('type', ''))} href={quoteattr(uri)} />"
            f"<category term={quoteattr(meta.get('type', ''))} "
            "scheme=\"http://schemas.microsoft.com/ado/2007/08/dataservices/scheme\" />"
            "<content type=\"application/xml\"><m:properties>" + "".join(props) +
            "</m:properties></content></entry>")


NS = ('xmlns="http://www.w3.org/2005/Atom" '
      'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
      'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"')


def feed(base: str, self_url: str, title: str, rows: list[dict], next_url: str | None, count: int | None) -> bytes:
    parts = [f'<?xml version="1.0" encoding="utf-8"?><feed xml:base={quoteattr(base + "/api/v1/")} {NS}>',
             f"<id>{escape(self_url)}</id><title type=\"text\">{escape(title)}</title><updated />",
             f"<link rel=\"self\" title={quoteattr(title)} href={quoteattr(title)} />"]
    if count is not None:
        parts.append(f"<m:count>{count}</m:count>")
    parts.extend(_entry(r) for r in rows)
    if next_url:
        parts.append(f"<link rel=\"next\" href={quoteattr(next_url)} />")
    parts.append("</feed>")
    return "".join(parts).encode()


def entry(base: str, row: dict) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><entry xml:base={quoteattr(base + "/api/v1/")} {NS}>'
            + _entry(row)[len("<entry>"):]).encode()
