"""The REST API: collections, paging, single rows, writes, ``$count``, mandatory filtering, bulk and sync.

Contract: ``serve(emu, request, division, rest, base) -> Answer``. ``rest`` is the path after the
division, percent-decoded. The answer says the status, body, content type, extra headers and the
outcome name for the statistics. Limits, authentication and the error limit are applied by the caller
(``app``); this module only knows what Exact answers for a request that got through them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from proxy.emulator import atom, rules
from proxy.emulator.data import EntitySet, resolve
from proxy.emulator.odata import parse_filter, select

KEY = re.compile(r"^(?P<entity>[^()]+)\((?P<key>.*)\)$")
GUID_KEY = re.compile(r"^guid'(?P<g>[0-9a-fA-F-]{36})'$")

@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = "ok"


def error(status: int, message: str, outcome: str) -> Answer:
    body = json.dumps({"error": {"code": "", "message": {"lang": "", "value": message}}}).encode()
    return Answer(status, body, "application/json", {}, outcome)


def _metadata(row: dict, es: EntitySet, base: str, division: int) -> dict:
    key = row.get(es.entity.key)
    literal = f"guid'{key}'" if isinstance(key, str) and len(key) == 36 else str(key)
    out = {"__metadata": {"uri": f"{base}/api/v1/{division}/{es.path}({literal})",
                          "type": f"Exact.Web.Api.Models.{es.entity.model}"}}
    out.update(row)
    return out


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def serve(emu, request, division: int, rest: str, base: str, query: Mapping[str, str], raw_query: str,
          body: bytes = b"") -> Answer:
    count_only = False
    if rest.lower().endswith("/$count"):
        rest, count_only = rest[: -len("/$count")], True
    last = rest.rsplit("/", 1)
    key = None
    m = KEY.match(last[-1])
    if m:
        key = m.group("key")
        rest = (last[0] + "/" if len(last) == 2 else "") + m.group("entity")
    es = resolve(rest)
    if es is None:
        return error(404, f"Resource not found: {rest}", "not_found")
    endpoint = rest.lower()
    method = request.method
    if method in ("GET", "HEAD"):
        if key is not None:
            return _one(emu, es, division, key, base, query, request)
        return _list(emu, es, division, endpoint, base, query, raw_query, count_only, request)
    if es.entity.name != "Accounts" or es.mode != "regular":
        return error(405, f"{method} is not supported on {es.path}", "bad_request")
    return _write(emu, es, division, key, base, body, method)


def _find_key(key: str) -> str | None:
    g = GUID_KEY.match(key.strip())
    return g.group("g").lower() if g else None


def _one(emu, es, division, key, base, query, request) -> Answer:
    gid = _find_key(key)
    row = emu.data.find(division, es.entity, gid) if gid else None
    if row is None:
        return error(404, "Not found", "not_found")
    out = select(_metadata(row, es, base, division), _fields(query))
    if _wants_json(request):
        return Answer(200, _json({"d": out}))
    return Answer(200, atom.entry(base, out), "application/atom+xml")


def _fields(query) -> list[str] | None:
    sel = query.get("$select")
    return [f.strip() for f in sel.split(",") if f.strip()] if sel else None


def _wants_json(request) -> bool:
    return "json" in request.headers.get("Accept", "")


def _list(emu, es, division, endpoint, base, query, raw_query, count_only, request) -> Answer:
    text = query.get("$filter")
    flt = None
    if text:
        try:
            flt = parse_filter(text)
        except ValueError as exc:
            return error(400, f"Error processing $filter: {exc}", "bad_request")
    refused = rules.check(emu, es, endpoint, flt, query, count_only)
    if refused is not None:
        return error(400, refused[0], refused[1])
    if es.mode == "deleted":
        rows = sorted(emu.data.deleted(division), key=lambda r: r["Timestamp"])
    elif es.entity.name == "Divisions":
        rows = emu.division_rows(division)
    else:
        rows = emu.data.rows(division, es.entity)
        if es.mode == "sync":
            rows = sorted(rows, key=lambda r: r["Timestamp"])
    if flt is not None:
        rows = [r for r in rows if flt.match(r)]
    if count_only:
        return Answer(200, str(len(rows)).encode(), "text/plain")
    total = len(rows)
    token = query.get("$skiptoken")
    if token:
        if es.mode in ("sync", "deleted"):
            try:
                after = int(token.rstrip("Ll"))
            except ValueError:
                return error(400, f"Invalid $skiptoken: {token}", "bad_request")
            rows = [r for r in rows if r["Timestamp"] > after]
        else:
            gid = _find_key(token) or token.strip("'").lower()
            keyname = es.entity.key
            rows = [r for r in rows if str(r[keyname]).lower() > gid]
    try:
        skip = int(query.get("$skip", 0))
        top = int(query["$top"]) if "$top" in query else None
    except ValueError:
        return error(400, "$skip and $top must be whole numbers", "bad_request")
    if skip:
        rows = rows[skip:]
    size = emu.config.bulk_page_size if es.mode in ("bulk", "sync", "deleted") else emu.config.page_size
    take = size if top is None else min(size, top)
    page = rows[:take]
    more = len(rows) > len(page) and (top is None or top > len(page))
    fields = _fields(query)
    out = [select(_metadata(r, es, base, division), fields) for r in page]
    next_url = None
    if more and page:
        last = page[-1]
        tok = f"{last['Timestamp']}L" if es.mode in ("sync", "deleted") else f"guid'{last[es.entity.key]}'"
        next_url = _next_url(base, request.path, raw_query, tok, None if top is None else top - len(page))
    count = str(total) if query.get("$inlinecount") == "allpages" else None
    if _wants_json(request):
        d: dict = {"results": out}
        if count is not None:
            d["__count"] = count
        if next_url:
            d["__next"] = next_url
        return Answer(200, _json({"d": d}))
    return Answer(200, atom.feed(base, base + request.path, es.entity.name, out, next_url, total if count else None),
                  "application/atom+xml")


def _next_url(base: str, path: str, raw_query: str, token: str, top: int | None) -> str:
    kept = []
    for part in raw_query.split("&") if raw_query else []:
        name = part.split("=", 1)[0].replace("%24", "$").lower()
        if name in ("$skiptoken", "$skip") or (top is not None and name == "$top"):
            continue
        kept.append(part)
    if top is not None:
        kept.append(f"$top={top}")
    kept.append("$skiptoken=" + quote(token, safe="'"))
    return f"{base}{quote(path, safe='/()$,')}?{'&'.join(kept)}"


def _write(emu, es, division, key, base, body: bytes, method) -> Answer:
    now_ms = int(emu.clock.time() * 1000)
    if method == "POST" and key is None:
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            return error(400, "The request body is not valid JSON.", "bad_request")
        if not isinstance(fields, dict) or not fields.get("Name"):
            return error(400, "Mandatory: Name", "bad_request")
        row = emu.data.insert(division, es.entity, fields, now_ms)
        out = _metadata(row, es, base, division)
        return Answer(201, _json({"d": out}), "application/json",
                      {"Location": out["__metadata"]["uri"]}, "created")
    gid = _find_key(key or "")
    row = emu.data.find(division, es.entity, gid) if gid else None
    if row is None:
        return error(404, "Not found", "not_found")
    if method == "PUT":
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            return error(400, "The request body is not valid JSON.", "bad_request")
        emu.data.update(row, fields if isinstance(fields, dict) else {}, now_ms)
        return Answer(204, b"", None, {}, "updated")
    if method == "DELETE":
        emu.data.delete(division, es.entity, row)
        return Answer(204, b"", None, {}, "deleted")
    return error(405, f"{method} is not supported", "bad_request")
