"""Local answers in Exact's error envelope.

Contract: ``exact_error(status, message)`` builds a ``Reply`` whose body is
``{"error":{"code":"","message":{"lang":"","value":"exact-proxy: <message>"}}}`` — the shape every
Exact client already parses (``error.message.value``). The message names the cause; it never contains a
token or secret (callers pass text they built, never a client's header or body).
"""

from __future__ import annotations

import json

from proxy.context import Reply

PREFIX = "exact-proxy: "


def envelope(message: str, code: str = "") -> bytes:
    return json.dumps({"error": {"code": code, "message": {"lang": "", "value": PREFIX + message}}},
                      ensure_ascii=False).encode()


def exact_error(status: int, message: str, headers: dict[str, str] | None = None, code: str = "") -> Reply:
    reply = Reply.make_local(status, envelope(message, code), headers)
    reply.headers.setdefault("X-Exact-Proxy", "local")
    return reply
