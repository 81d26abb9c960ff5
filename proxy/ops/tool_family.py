"""The family of a tool, read from its User-Agent: a small, fixed set of names fit for a metric label.

Contract
- ``family(user_agent) -> str`` is one of ``FAMILIES``, never the raw header: ``python-requests``,
  ``python-httpx``, ``aiohttp``, ``Python-urllib``, ``Microsoft Office Excel``, ``Power Query``
  (``Microsoft.Data.Mashup``: Excel's and Power BI's Get Data), ``PowerShell``, ``curl``, ``Wget``,
  ``Go-http-client``, ``node-fetch``, ``axios``, ``node`` (Node's own fetch, undici), ``okhttp``,
  ``.NET`` (RestSharp, ``.NET``/``Microsoft.NET`` HTTP clients), ``Java`` (``Java/…``,
  ``Apache-HttpClient``), ``Postman``, ``browser`` (any other ``Mozilla/…``), ``other``; ``none`` when
  the request has no User-Agent. The first rule that matches (case-insensitive, in ``RULES`` order)
  names it, so a PowerShell UA that starts with ``Mozilla/5.0`` is ``PowerShell``.
- Pure and cheap: answers for the most recent User-Agent values are kept (at most ``CACHE`` of them;
  the cache starts over when full), so a request costs one dict lookup.
"""

from __future__ import annotations

RULES: tuple[tuple[str, str], ...] = (
    ("microsoft office excel", "Microsoft Office Excel"),
    ("microsoft excel", "Microsoft Office Excel"),
    ("microsoft.data.mashup", "Power Query"),
    ("powershell", "PowerShell"),
    ("python-requests", "python-requests"),
    ("python-httpx", "python-httpx"),
    ("aiohttp", "aiohttp"),
    ("python-urllib", "Python-urllib"),
    ("curl/", "curl"),
    ("wget", "Wget"),
    ("go-http-client", "Go-http-client"),
    ("node-fetch", "node-fetch"),
    ("axios", "axios"),
    ("undici", "node"),
    ("okhttp", "okhttp"),
    ("restsharp", ".NET"),
    (".net", ".NET"),
    ("apache-httpclient", "Java"),
    ("java/", "Java"),
    ("postmanruntime", "Postman"),
    ("mozilla/", "browser"),
)
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys([name for _, name in RULES] + ["node", "other", "none"]))
CACHE = 1024

_known: dict[str | None, str] = {}


def family(user_agent: str | None) -> str:
    try:
        return _known[user_agent]
    except KeyError:
        pass
    name = _family(user_agent)
    if len(_known) >= CACHE:  # User-Agent values come from clients: keep the cache bounded
        _known.clear()
    _known[user_agent] = name
    return name


def _family(user_agent: str | None) -> str:
    text = (user_agent or "").strip().lower()
    if not text:
        return "none"
    for needle, name in RULES:
        if needle in text:
            return name
    if text == "node" or text.startswith("node/"):
        return "node"
    return "other"
