"""Keep secrets out of every log line.

Contract
- ``redact_query(raw_query)`` masks the values of parameters that carry secrets (codes, tokens, client
  secrets) while keeping every other byte as sent.
- ``scrub(text)`` masks anything that looks like a credential in free text: ``Bearer …``/``Basic …``
  values, ``name=value`` and ``"name":"value"`` pairs for secret names, and every value registered with
  ``remember_secret`` (the token broker registers the tokens it sees). The log formatter applies it to
  every line, as a last line of defence.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
SECRET_NAMES = ("code", "access_token", "refresh_token", "client_secret", "id_token", "token",
                "password", "assertion", "client_assertion", "authorization", "secret")

_names = "|".join(sorted(SECRET_NAMES, key=len, reverse=True))
_QUERY_PARAM = re.compile(r"(^|&)((?:%[0-9a-fA-F]{2}|[^&=])*?)=([^&]*)")
_PAIR = re.compile(r"(?i)\b((?:%s))(=|%%3D)([^&\s\"',;]+)" % _names)
_JSON_PAIR = re.compile(r"(?i)(\"(?:%s)\"\s*:\s*\")([^\"]*)(\")" % _names)
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/!=%]{4,}")

_SUSPECT = re.compile(r"(?i)bearer|basic|code|token|secret|password|assertion|authorization|%5f")
_known: set[str] = set()
_lock = threading.Lock()
_known_re: re.Pattern[str] | None = None


def remember_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears in later log lines."""
    global _known_re
    if not value or len(value) < 6:
        return
    with _lock:
        if value in _known:
            return
        _known.add(value)
        if len(_known) > 10000:  # bounded: the newest secrets matter most
            _known.pop()
        _known_re = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def redact_query(raw_query: str) -> str:
    if not raw_query or _SUSPECT.search(raw_query) is None:
        return raw_query

    def mask(m: re.Match[str]) -> str:
        name = m.group(2)
        plain = name.lower().replace("%5f", "_")
        return f"{m.group(1)}{name}={MASK}" if plain in SECRET_NAMES else m.group(0)

    return _QUERY_PARAM.sub(mask, raw_query)


def scrub(text: str) -> str:
    known = _known_re
    if known is None and _SUSPECT.search(text) is None:
        return text  # nothing that could be a credential: the common case, kept cheap
    text = _AUTH.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _JSON_PAIR.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    if known is not None:
        text = known.sub(MASK, text)
    return text
