"""Reading credentials from a request: HTTP Basic for the token endpoint, Bearer for API calls.

Contract: ``basic(header) -> (user, password) | None``; ``bearer(header) -> token | None``;
``authenticate(emu, request) -> (app, user, failure)`` where failure is None or
``(outcome, response)``: an unknown or missing token is 401 ``Reason: Unauthorized`` (outcome
``unauthorized``, app ``unknown``), a revoked one (``/_emulator/revoke``) the same 401 for its own app
(outcome ``token_revoked``), an expired one 401 (outcome ``token_expired``). With ``require_auth:
false`` a call without a token is let through as app ``anonymous``. The app is in its normal form.
``unauthorized()`` is the plain 401 (``Reason: Unauthorized``, value ``Unauthorized``).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from proxy.emulator.errors import rest_error


def basic(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, _, pw = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(user), unquote(pw)


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def unauthorized():
    return rest_error(401, "Unauthorized", {"Reason": "Unauthorized"})


def authenticate(emu, request):
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        if not emu.config.require_auth:
            return "anonymous", None, None
        return "unknown", None, ("unauthorized", unauthorized())
    app, user, problem = emu.oauth.check(token)
    if problem == "unknown":
        return "unknown", None, ("unauthorized", unauthorized())
    if problem == "revoked":
        return app, user, ("token_revoked", unauthorized())
    if problem == "expired":
        return app, user, ("token_expired", rest_error(401, "Access token expired",
                                                       {"Reason": "Unauthorized: access token expired"}))
    return app, user, None
