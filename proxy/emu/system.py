"""``current/Me`` (no division, not limited) and ``system/Divisions`` (limited like any division call).

Contract
- ``me(emu, request, client, user)``: ``{"d":{"results":[{…,"CurrentDivision":<first configured>}]}}``.
- ``divisions(emu, request, division)``: one row per configured division (plus the one asked about).
Both answer JSON with ``Accept: application/json`` and Atom otherwise, with absolute ``__metadata.uri``.
"""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from . import atom
from .rest import base_url, wants_json


def _answer(emu, request, base: str, rows: list[dict], title: str) -> web.Response:
    if wants_json(request):
        return web.Response(
            body=json.dumps({"d": {"results": rows}}, separators=(",", ":")).encode(),
            content_type="application/json",
            charset="utf-8",
        )
    body = atom.feed(base, base + request.path_qs, title, rows, None, None, emu.clock.time())
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


def me(emu, request: web.Request, client: str, user: str) -> tuple[web.Response, str]:
    base = base_url(emu, request)
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"exact-emulator-user:{user}"))
    current = emu.config.divisions[0] if emu.config.divisions else 1
    row = {
        "__metadata": {"uri": f"{base}/api/v1/current/Me(guid'{uid}')", "type": "Exact.Web.Api.System.Me"},
        "UserID": uid,
        "UserName": user,
        "FullName": f"Emulated {user}",
        "Email": f"{user}@example.com",
        "CurrentDivision": current,
        "DivisionCustomer": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cust:{current}")),
        "LanguageCode": "nl-NL",
    }
    return _answer(emu, request, f"{base}/api/v1/current/", [row], "Me"), "ok"


def divisions(emu, request: web.Request, division: int) -> tuple[web.Response, str]:
    base = base_url(emu, request)
    codes = list(emu.config.divisions)
    if division not in codes:
        codes.append(division)
    rows = [
        {
            "__metadata": {
                "uri": f"{base}/api/v1/{division}/system/Divisions({c})",
                "type": "Exact.Web.Api.Models.HRM.Division",
            },
            "Code": c,
            "Description": f"Emulated division {c}",
            "HID": c,
            "Current": c == codes[0],
            "Country": "NL",
            "Currency": "EUR",
        }
        for c in codes
    ]
    return _answer(emu, request, f"{base}/api/v1/{division}/", rows, "Divisions"), "ok"
