"""HTTP Basic credentials as Exact's token endpoint takes them (client id and secret).

Contract: ``basic_credentials(header)`` is ``(user, password)`` from an ``Authorization: Basic …``
header, percent-decoded (RFC 6749 §2.3.1), or None when the header is absent, of another scheme, or
not valid base64 / UTF-8. Pure, no state.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, _, password = decoded.partition(":")
    return unquote(user), unquote(password)
