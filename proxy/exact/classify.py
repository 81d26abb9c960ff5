"""Classify a request by its URL: which app, division, endpoint and kind it concerns.

Contract: ``classify(method, raw_path, raw_query, authorization, default_app)`` is a pure function of
its arguments. It never raises on odd input; an unparseable URL is kind ``other``. Results for
``/api/v1/…`` paths are cached (the query plays no part there; the most recent 4096 paths).

- **app**: the OAuth client_id when the request shows it (``client_id`` in the query of
  ``/api/oauth2/*``, or HTTP Basic credentials), in its normal form (``proxy.exact.client_id``), else
  ``default_app``. The token broker refines it later from the access token.
- **division**: the number in ``/api/v1/{division}/…``, or ``_Division_`` on ``/docs/XML*.aspx``.
- **endpoint**: the path after the division, key segments (``Accounts(guid'…')``), ``$count`` and
  ``$value`` removed, case-folded: ``crm/accounts``, ``bulk/crm/accounts``. For XML:
  ``xml/download/items``. Token and auth calls: ``oauth2/token``, ``oauth2/auth``.
- **kind**: rest, bulk, sync, read, xml, token, auth, me or other.
- **refusal**: set (``proxy.exact.odd_targets``) when the target could reach a division the proxy cannot
  count it against, or a path other than the one it names: a division segment or ``_Division_`` that
  is not plain ASCII digits (``+555``, `` 556``, ``-1``), an empty division segment, ``_Division_`` or
  ``Topic`` given twice, a dot segment or backslash anywhere in the path. Division and endpoint are then
  None and the ``classify`` filter answers 400 with the refusal's message.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from proxy.exact.client_id import normal_client_id
from proxy.exact.credentials import basic_credentials
from proxy.exact.odd_targets import Refusal, bad_division, division_number, path_refusal, repeated

KINDS = ("rest", "bulk", "sync", "read", "xml", "token", "auth", "me", "other")
LIMITED_KINDS = frozenset(("rest", "bulk", "sync", "read", "xml"))  # what Exact's call limits count

_KEY_SEGMENT = re.compile(r"\(.*\)$")
_PREFIX_KINDS = {"bulk": "bulk", "sync": "sync", "read": "read"}


@dataclass(frozen=True, slots=True)
class Classification:
    app: str
    division: int | None
    endpoint: str | None
    kind: str
    entity_key: str | None = None   # the text inside Accounts(...), when the path addresses one row
    refusal: Refusal | None = None  # the target must not be forwarded (proxy.exact.odd_targets)

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
    refusal = path_refusal(path)
    if refusal is not None:
        return Classification(app, None, None, "other", refusal=refusal)

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
        head, _, rest = path[len("/api/v1/"):].partition("/")
        segments = [s for s in rest.split("/") if s]
        if not head and not segments:
            return Classification(app, None, None, "other")
        if head.lower() == "current":
            return Classification(app, None, "/".join(["current", *(s.lower() for s in segments)]), "me")
        division = division_number(head)
        if division is None:
            return Classification(app, None, None, "other", refusal=bad_division(head, "segment"))
        parts: list[str] = []
        key: str | None = None
        for seg in segments:
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
        topics, div_texts = _query_values(raw_query, "topic"), _query_values(raw_query, "_division_")
        if len(topics) > 1 or len(div_texts) > 1:
            return Classification(app, None, None, "other",
                                  refusal=repeated("Topic" if len(topics) > 1 else "_Division_"))
        topic = topics[0].lower() if topics and topics[0] else None
        division = None
        if div_texts:
            division = division_number(div_texts[0])
            if division is None:
                return Classification(app, None, None, "other", refusal=bad_division(div_texts[0], "query"))
        endpoint = f"xml/{direction}/{topic}" if topic else f"xml/{direction}"
        return Classification(app, division, endpoint, "xml")

    return Classification(app, None, None, "other")


def _query_values(raw_query: str, name: str) -> list[str]:
    """Every value of ``name`` (case-insensitive), decoded as Exact decodes them (``+`` is a space)."""
    if not raw_query:
        return []
    name = name.lower()
    return [value for key, value in parse_qsl(raw_query, keep_blank_values=True) if key.lower() == name]


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
    creds = basic_credentials(authorization)
    return (creds[0] or None) if creds else None
