"""Rows that are not generated data: ``current/Me`` (no division, no call limit) and ``system/Divisions``.

Contract: ``me(emu, user, base, select) -> web.Response`` answers ``{"d":{"results":[{…,
"CurrentDivision": N}]}}`` (N is the first configured division, else ``current_division``);
``division_rows(emu, division)`` lists the divisions the user can see (the configured ones, else the
asked one).
"""

from __future__ import annotations

import json
import uuid

from aiohttp import web


def current_division(emu) -> int:
    return emu.config.divisions[0] if emu.config.divisions else emu.config.current_division


def me(emu, user: str, base: str, select: str | None) -> web.Response:
    division = current_division(emu)
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, "exact-emulator-user:" + user))
    row = {"__metadata": {"uri": f"{base}/api/v1/current/Me(guid'{uid}')", "type": "Exact.Web.Api.System.Me"},
           "UserID": uid, "UserName": user, "FullName": user.replace("-", " ").title(),
           "CurrentDivision": division, "DivisionCustomer": str(uuid.UUID(int=division)),
           "Email": f"{user}@example.com", "Language": "NL-NL"}
    if select:
        row = {"__metadata": row["__metadata"], **{k: row[k] for k in select.split(",") if k in row}}
    return web.Response(status=200, body=json.dumps({"d": {"results": [row]}}).encode(),
                        content_type="application/json")


def division_rows(emu, division: int) -> list[dict]:
    divisions = emu.config.divisions or [division]
    return [{"Code": d, "Description": f"Division {d}", "HID": d, "Customer": str(uuid.UUID(int=d)),
             "Country": "NL", "Currency": "EUR", "Timestamp": 1000 + i} for i, d in enumerate(divisions)]
