"""Exact's answer shapes: the REST error envelope, OAuth errors, and the empty 429."""

from __future__ import annotations

import json

from aiohttp import web


def rest_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": "", "message": {"lang": "", "value": message}}}).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": error, "error_description": description}).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def empty(status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=b"", headers=headers)
