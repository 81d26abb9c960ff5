"""The XML API, minimally: ``/docs/XMLDownload.aspx`` and ``/docs/XMLUpload.aspx``.

Contract: ``await serve_xml(emu, request, low_path)``. ``_Division_`` is required (400 otherwise, not
counted). The bearer token is checked and the call passes the same gate as REST (it counts toward the
minute and day limits; its error-limit endpoint is ``xml/download/<topic>`` or ``xml/upload/<topic>``).
Download of ``Accounts`` or ``Items`` returns an ``<eExact>`` document with up to 100 rows; any other
topic gets an eExact error message (400). Upload accepts any body with any content type and answers an
eExact ``Messages`` success.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from proxy.emulator.auth import authenticate
from proxy.emulator.data import ENTITIES
from proxy.emulator.gate import counted
from proxy.emulator.rest import Answer

TOPICS = {"accounts": "crm/accounts", "items": "logistics/items"}
XML = "application/xml"


async def serve_xml(emu, request: web.Request, low: str) -> web.StreamResponse:
    q = {k.lower(): v for k, v in request.query.items()}
    topic = q.get("topic", "")
    direction = "upload" if "xmlupload" in low else "download"
    try:
        division = int(q.get("_division_", ""))
    except ValueError:
        emu.counter.record(request.method, request.path, None, None, None, 400, "bad_request")
        return web.Response(status=400, text="_Division_ is required")
    app, _user, failure = authenticate(emu, request)
    endpoint = f"xml/{direction}/{topic.lower()}"

    async def serve() -> Answer:
        if direction == "upload":
            await request.read()
            body = ('<?xml version="1.0" encoding="utf-8"?><eExact><Messages><Message type="2">'
                    f'<Topic code={quoteattr(topic)} node={quoteattr(topic.rstrip("s"))} />'
                    f"<Date>{math.floor(emu.clock.time())}</Date>"
                    "<Description>Created</Description></Message></Messages></eExact>")
            return Answer(200, body.encode(), XML, {}, "ok")
        entity = ENTITIES.get(TOPICS.get(topic.lower(), ""))
        if entity is None:
            return Answer(400, b'<?xml version="1.0" encoding="utf-8"?><eExact><Messages><Message type="0">'
                          b"<Description>Unknown topic</Description></Message></Messages></eExact>",
                          XML, {}, "bad_request")
        rows = emu.data.rows(division, entity)[:100]
        inner = "".join(f'<{entity.model} ID="{{{r["ID"]}}}"><Name>{escape(str(r.get("Name") or r.get("Description", "")))}'
                        f"</Name></{entity.model}>" for r in rows)
        body = f'<?xml version="1.0" encoding="utf-8"?><eExact><{topic}>{inner}</{topic}></eExact>'
        return Answer(200, body.encode(), XML, {}, "ok")

    return await counted(emu, request, app, division, endpoint, failure, serve)
