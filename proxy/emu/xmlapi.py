"""Exact's XML API, minimally: ``GET /docs/XMLDownload.aspx`` and ``POST /docs/XMLUpload.aspx``.

Contract
- Both need a bearer token and ``_Division_``; both pass the same gate as REST calls (limits, error limit,
  statistics) with endpoint ``xml/download/<topic>`` / ``xml/upload/<topic>`` (case-folded).
- Download of topic ``Accounts`` answers ``<eExact>`` with one ``<Account>`` per account of the division;
  other known topics answer an empty ``<eExact>`` with the topic's element; ``Params_*`` are accepted.
- Upload accepts any body and any content type and answers an eExact ``<Messages>`` success.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from .errors import rest_error
from .faults_http import apply_fault
from .gate import bearer, limited
from .state import EMULATOR

XML = "application/xml"


def _xml(body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text='<?xml version="1.0" encoding="utf-8"?>' + body, content_type=XML, charset="utf-8"
    )


def _eexact(inner: str) -> str:
    return (
        '<eExact xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:noNamespaceSchemaLocation="eExact-Schema.xsd">{inner}</eExact>'
    )


async def _gate(request: web.Request, direction: str, make) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    emu.stats_.requests += 1
    if emu.faults.rules:
        faulted = await apply_fault(emu, request)
        if faulted is not None:
            return faulted
    now = emu.clock.time()
    topic = request.query.get("Topic", "")
    div = request.query.get("_Division_", "")
    endpoint = f"xml/{direction}/{topic.lower()}"
    client, _user, problem = bearer(emu, request, now)
    if problem is not None or client is None:
        emu.stats_.record(
            request.method,
            request.path,
            client,
            None,
            endpoint,
            401,
            "unauthorized" if problem == "unknown" else "token_expired",
            now,
        )
        return rest_error(401, "Unauthorized", reason="Unauthorized")
    if not div.isdigit() or not topic:
        emu.stats_.record(request.method, request.path, client, None, endpoint, 400, "bad_request", now)
        return _xml(
            _eexact(
                '<Messages><Message type="0"><Description>Topic and _Division_ are required.'
                "</Description></Message></Messages>"
            ),
            400,
        )

    async def call():
        return await make(emu, int(div), topic)

    return await limited(emu, request, client, int(div), endpoint, now, call)


async def _download(emu, division: int, topic: str):
    if topic.lower() != "accounts":
        return _xml(_eexact(f"<{escape(topic)}s />")), "ok"
    rows = emu.data.table(division, "Accounts").ordered()
    parts = []
    for r in rows:
        parts.append(
            f"<Account ID={quoteattr('{' + r['ID'] + '}')} code={quoteattr(r['Code'].strip())} "
            f"status={quoteattr(r['Status'])}><Name>{escape(r['Name'])}</Name>"
            f"<Email>{escape(r['Email'])}</Email><Phone>{escape(r['Phone'])}</Phone>"
            f"<Address><City>{escape(r['City'])}</City><Country code={quoteattr(r['Country'])} />"
            f"</Address></Account>"
        )
    return _xml(_eexact("<Accounts>" + "".join(parts) + "</Accounts>")), "ok"


async def download(request: web.Request) -> web.StreamResponse:
    return await _gate(request, "download", _download)


async def upload(request: web.Request) -> web.StreamResponse:
    body = await request.read()

    async def make(emu, division: int, topic: str):
        n = body.count(b"<Account ") + body.count(b"<Item ") or (1 if body.strip() else 0)
        text = _eexact(
            f'<Messages><Message type="2"><Topic code={quoteattr(topic)} node="" />'
            f"<Description>{n} record(s) processed.</Description></Message></Messages>"
        )
        return _xml(text), "ok"

    return await _gate(request, "upload", make)
