"""Classify a request by its URL: which app, division, endpoint and kind it concerns.

Contract: ``classify(method, raw_path, raw_query, authorization, default_app)`` is a pure function of
its arguments. It never raises on odd input; an unparseable URL is kind ``other``. Results for
``/api/v1/…`` paths are cached (the query plays no part there; the most recent 4096 paths).

- **app**: the OAuth client_id when the request shows it (``client_id`` in the query of
  ``/api/oauth2/*``, or HTTP Basic credentials), in its normal form (``proxy.client_id``), else
  ``default_app``. The token broker refines it later from the access token.
- **division**: the number in ``/api/v1/{division}/…``, or ``_Division_`` on ``/docs/XML*.aspx``.
- **endpoint**: the path after the division, key segments (``Accounts(guid'…')``), ``$count`` and
  ``$value`` removed, case-folded: ``crm/accounts``, ``bulk/crm/accounts``. For XML:
  ``xml/download/items``. Token and auth calls: ``oauth2/token``, ``oauth2/auth``.
- **kind**: rest, bulk, sync, read, xml, token, auth, me or other.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from .client_id import normal_client_id

KINDS = ("rest", "bulk", "sync", "read", "xml", "token", "auth", "me", "other")

_KEY_SEGMENT = re.compile(r"\(.*\)$")
_PREFIX_KINDS = {"bulk": "bulk", "sync": "sync", "read": "read"}


@dataclass(frozen=True, slots=True)
class Classification:
    app: str
    division: int | None
    endpoint: str | None
    kind: str
    entity_key: str | None = None   # the text inside Accounts(...), when the path addresses one row

    @property
    def counts_toward_limits(self) -> bool:
        """Exact counts calls per app and division; calls without a division do not count."""
        return self.division is not None


def classify(method: str, raw_path: str, raw_query: str = "", authorization: str | None = None,
             default_app: str = "default") -> Classification:
    basic = authorization if authorization and authorization[:6].lower() == "basic " else None
    if raw_path[:8].lower() == "/api/v1/" and "?" not in raw_path:
        return _classify_api(raw_path, basic, default_app)  # the query plays no part: cached
    return _classify(raw_path, raw_query, basic, default_app)


@functools.lru_cache(maxsize=4096)
def _classify_api(raw_path: str, basic: str | None, default_app: str) -> Classification:
    return _classify(raw_path, "", basic, default_app)


def _classify(raw_path: str, raw_query: str, authorization: str | None, default_app: str) -> Classification:
    path = unquote(raw_path.split("?", 1)[0])
    lower = path.lower()
    app = normal_client_id(_basic_client_id(authorization)) or default_app

    if lower.startswith("/api/oauth2/"):
        rest = lower[len("/api/oauth2/"):].strip("/")
        qs_app = normal_client_id(_query_value(raw_query, "client_id"))
        app = qs_app or app
        if rest == "token":
            return Classification(app, None, "oauth2/token", "token")
        if rest == "auth":
            return Classification(app, None, "oauth2/auth", "auth")
        return Classification(app, None, None, "other")

    if lower.startswith("/api/v1/"):
        segments = [s for s in path[len("/api/v1/"):].split("/") if s]
        if not segments:
            return Classification(app, None, None, "other")
        head = segments[0]
        if head.lower() == "current":
            return Classification(app, None, "/".join(s.lower() for s in segments), "me")
        if not head.isdigit() or len(head) > 12:
            return Classification(app, None, None, "other")
        division = int(head)
        parts: list[str] = []
        key: str | None = None
        for seg in segments[1:]:
            low = seg.lower()
            if low in ("$count", "$value", "$links"):
                continue
            m = _KEY_SEGMENT.search(seg)
            if m:
                if key is None:
                    key = m.group(0)[1:-1]
                seg = seg[: m.start()]
                low = seg.lower()
            if seg:
                parts.append(low)
        if not parts:
            return Classification(app, division, None, "other")
        kind = _PREFIX_KINDS.get(parts[0], "rest")
        return Classification(app, division, "/".join(parts), kind, key)

    if lower.startswith("/docs/xmldownload.aspx") or lower.startswith("/docs/xmlupload.aspx"):
        direction = "download" if "xmldownload" in lower else "upload"
        topic = (_query_value(raw_query, "topic") or "").lower() or None
        div_text = _query_value(raw_query, "_division_") or ""
        division = int(div_text) if div_text.isdigit() and len(div_text) <= 12 else None
        endpoint = f"xml/{direction}/{topic}" if topic else f"xml/{direction}"
        return Classification(app, division, endpoint, "xml")

    return Classification(app, None, None, "other")


def _query_value(raw_query: str, name: str) -> str | None:
    """The first value of ``name`` (case-insensitive), decoded; None when absent."""
    if not raw_query:
        return None
    name = name.lower()
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        if key.lower() == name:
            return value
    return None


def _basic_client_id(authorization: str | None) -> str | None:
    if not authorization or not authorization[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    client_id = unquote(decoded.split(":", 1)[0])
    return client_id or None
