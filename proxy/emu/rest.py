"""REST handlers for one division's endpoint (auth, limits and statistics are done by the gate).

Contract: each function takes the emulator, the request, the division, the endpoint key and ``Endpoint``
and returns ``(response, outcome)``.
- ``get_collection``: paging (60, 1000 for bulk and sync), ``__next`` absolute with ``$skiptoken``,
  ``$inlinecount`` (``__count`` as a string), ``/$count`` (bare number), JSON or Atom.
- ``get_one``: a row by key, ``{"d":{…}}``; unknown or deleted key 404 in Exact's envelope (``not_found``).
- ``post``/``put``/``delete`` on crm/Accounts: 201 + Location, 204, 204 (row goes to sync/Deleted).
"""

from __future__ import annotations

import json

from aiohttp import web

from . import atom
from .entities import Endpoint
from .errors import rest_error
from .query import Options, Refusal, next_url

JSON_CT = "application/json"


def wants_json(request: web.Request) -> bool:
    return "json" in request.headers.get("Accept", "")


def base_url(emu, request: web.Request) -> str:
    return (
        emu.config.public_base_url.rstrip("/")
        if emu.config.public_base_url
        else f"{request.scheme}://{request.host}"
    )


def key_literal(ep: Endpoint, row: dict) -> str:
    if ep.kind == "sync":
        return f"{row['Timestamp']}L"
    return f"guid'{row[ep.spec.key]}'"


def shape(row: dict, ep: Endpoint, prefix: str, select: list[str] | None) -> dict:
    out = {"__metadata": {"uri": f"{prefix}({key_literal(ep, row)})", "type": ep.spec.type}}
    if select is not None:
        for f in select:
            out[f] = row.get(f)
    elif ep.kind == "sync":
        out.update(row)
    else:
        for f in ep.spec.fields:
            out[f] = row.get(f)
    return out


def _json(payload, status: int = 200, headers=None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type=JSON_CT,
        charset="utf-8",
        headers=headers,
    )


def _rows(emu, division: int, ep: Endpoint, token):
    table = emu.data.table(division, ep.spec.name)
    if ep.kind == "sync":
        rows = table.by_timestamp()
        return rows if token is None else [r for r in rows if r["Timestamp"] > token]
    by_key = table.by_key
    return (by_key[k] for k in table.keys_after(token))


def get_collection(emu, request: web.Request, division: int, key: str, ep: Endpoint, count_only: bool):
    try:
        opts = Options.parse(
            request.query,
            key,
            ep,
            emu.config,
            key in emu.mandatory and (not count_only or emu.config.mandatory_filter_on_count),
        )
    except Refusal as r:
        return rest_error(400, r.message), r.outcome
    pred = opts.flt.predicate if opts.flt is not None else None
    if count_only:
        n = sum(1 for r in _rows(emu, division, ep, None) if pred is None or pred(r))
        return web.Response(text=str(n), content_type="text/plain"), "ok"
    size = emu.config.bulk_page_size if ep.kind in ("bulk", "sync") else emu.config.page_size
    limit = size if opts.top is None else min(size, opts.top)
    page: list[dict] = []
    more = False
    skip = opts.skip
    for r in _rows(emu, division, ep, opts.token):
        if pred is not None and not pred(r):
            continue
        if skip:
            skip -= 1
            continue
        if len(page) == limit:
            more = True
            break
        page.append(r)
    base = base_url(emu, request)
    prefix = f"{base}/api/v1/{division}/{ep.path}"
    nxt = None
    if more and page and (opts.top is None or opts.top > len(page)):
        top_left = None if opts.top is None else opts.top - len(page)
        token = key_literal(ep, page[-1])
        raw_path, _, raw_query = request.raw_path.partition("?")
        nxt = next_url(base + raw_path, raw_query, token, top_left)
    total = None
    if opts.inlinecount:
        total = sum(1 for r in _rows(emu, division, ep, None) if pred is None or pred(r))
    shaped = [shape(r, ep, prefix, opts.select) for r in page]
    if wants_json(request):
        d: dict = {"results": shaped}
        if total is not None:
            d["__count"] = str(total)
        if nxt:
            d["__next"] = nxt
        return _json({"d": d}), "ok"
    self_url = base + request.raw_path
    body = atom.feed(
        f"{base}/api/v1/{division}/",
        self_url,
        ep.path.rsplit("/", 1)[-1],
        shaped,
        nxt,
        total,
        emu.clock.time(),
    )
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8"), "ok"


def _one(emu, request, division: int, ep: Endpoint, row: dict, status: int = 200, headers=None):
    base = base_url(emu, request)
    prefix = f"{base}/api/v1/{division}/{ep.path}"
    select = None
    raw = request.query.get("$select")
    if raw and raw.strip() != "*":
        select = [s.strip() for s in raw.split(",") if s.strip()]
    shaped = shape(row, ep, prefix, select)
    if headers is not None:
        headers["Location"] = shaped["__metadata"]["uri"]
    if wants_json(request):
        return _json({"d": shaped}, status, headers)
    body = atom.entry(f"{base}/api/v1/{division}/", shaped, emu.clock.time())
    return web.Response(
        status=status, body=body, content_type="application/atom+xml", charset="utf-8", headers=headers
    )


def _not_found(ep: Endpoint):
    return rest_error(404, f"{ep.spec.name.rstrip('s')}: record not found."), "not_found"


def get_one(emu, request, division: int, ep: Endpoint, key: str):
    if ep.kind == "sync":
        return rest_error(400, "Sync endpoints cannot be read by key."), "bad_request"
    row = emu.data.table(division, ep.spec.name).by_key.get(key.lower())
    if row is None:
        return _not_found(ep)
    return _one(emu, request, division, ep, row), "ok"


async def _body(request: web.Request) -> dict:
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise Refusal(
            "Error processing request stream. The request body is not valid JSON.", "bad_request"
        ) from None
    if not isinstance(data, dict):
        raise Refusal("Error processing request stream. A JSON object is expected.", "bad_request")
    return data


def writable(emu, ep: Endpoint) -> bool:
    return ep.kind == "regular" and ep.spec.name == "Accounts"


async def post(emu, request, division: int, ep: Endpoint):
    try:
        values = await _body(request)
    except Refusal as r:
        return rest_error(400, r.message), r.outcome
    if not values.get("Name"):
        return rest_error(400, "Name: Mandatory field is missing."), "bad_request"
    row = emu.data.insert(division, ep.spec.name, values)
    return _one(emu, request, division, ep, row, 201, {}), "ok"


async def put(emu, request, division: int, ep: Endpoint, key: str):
    try:
        values = await _body(request)
    except Refusal as r:
        return rest_error(400, r.message), r.outcome
    if emu.data.update(division, ep.spec.name, key, values) is None:
        return _not_found(ep)
    return web.Response(status=204), "ok"


def delete(emu, request, division: int, ep: Endpoint, key: str):
    if not emu.data.delete(division, ep.spec.name, key):
        return _not_found(ep)
    return web.Response(status=204), "ok"
