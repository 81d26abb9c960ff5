"""Exact's error shapes.

Contract
- ``rest_error(status, text, reason=None, headers=None)``: REST envelope
  ``{"error":{"code":"","message":{"lang":"","value":text}}}`` as JSON, optional ``Reason`` header.
- ``oauth_error(status, error, description, headers=None)``: token-endpoint shape
  ``{"error":…,"error_description":…}``.
- ``empty(status, headers=None)``: a response with an empty body (429s, blocks).
"""

from __future__ import annotations

import json

from aiohttp import web

JSON = "application/json; charset=utf-8"


def rest_error(
    status: int, text: str, reason: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"code": "", "message": {"lang": "", "value": text}}}, separators=(",", ":"))
    h = dict(headers or {})
    if reason:
        h["Reason"] = reason
    return web.Response(
        status=status, body=body.encode(), content_type="application/json", charset="utf-8", headers=h
    )


def oauth_error(
    status: int, error: str, description: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    payload = {"error": error}
    if description is not None:
        payload["error_description"] = description
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def empty(status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=b"", headers=headers)
